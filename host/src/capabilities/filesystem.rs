//! `assessment:plugin/filesystem` (grant `read`): files of the assessed
//! system, reached only through the grants opened by [`super::target`], on
//! its bounded pool of blocking threads.

use std::io::{Read, Seek, SeekFrom};

use cap_std::fs::MetadataExt;

use crate::bindings::latest::assessment::plugin::filesystem::{
    self, DirEntry, EntryKind, FileStat,
};
use crate::bindings::latest::assessment::plugin::types::AccessError;

use super::PluginState;
use super::target::{
    access_error, blocking, entry_kind, granted_metadata, open_regular, read_capped,
};

impl filesystem::Host for PluginState {
    async fn read_file(&mut self, path: String) -> wasmtime::Result<Result<Vec<u8>, AccessError>> {
        let max = self.target.limits.max_file_bytes;
        let r = match self.resolve_or_refuse("read-file", &path) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let (rel, request, nofollow) = (r.rel, r.request, r.grant_file);
        Ok(blocking(r.dir, move |dir| {
            let file = open_regular(&dir, &rel, &request, nofollow)?;
            read_capped(file, max)
                .map_err(|e| access_error(&request, &e))?
                .ok_or_else(|| {
                    AccessError::TooLarge(format!(
                        "{} is larger than {max} bytes",
                        request.display()
                    ))
                })
        })
        .await)
    }

    async fn read_range(
        &mut self,
        path: String,
        offset: u64,
        length: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, AccessError>> {
        let max = self.target.limits.max_file_bytes;
        let r = match self.resolve_or_refuse("read-range", &path) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if length > max {
            return Ok(Err(AccessError::TooLarge(format!(
                "a window of {length} bytes of {} is larger than the {max}-byte limit; read it in smaller windows",
                r.request.display()
            ))));
        }
        let (rel, request, nofollow) = (r.rel, r.request, r.grant_file);
        Ok(blocking(r.dir, move |dir| {
            let mut file = open_regular(&dir, &rel, &request, nofollow)?;
            let mut buf = Vec::new();
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.take(length).read_to_end(&mut buf))
                .map_err(|e| access_error(&request, &e))?;
            Ok(buf)
        })
        .await)
    }

    async fn stat(&mut self, path: String) -> wasmtime::Result<Result<FileStat, AccessError>> {
        let r = match self.resolve_or_refuse("stat", &path) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let (rel, request, nofollow) = (r.rel, r.request, r.grant_file);
        Ok(blocking(r.dir, move |dir| {
            let meta = granted_metadata(&dir, &rel, &request, nofollow)?;
            Ok(FileStat {
                kind: entry_kind(meta.file_type()),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                size: meta.len(),
                modified: meta.mtime(),
                links: meta.nlink(),
            })
        })
        .await)
    }

    async fn list_dir(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Vec<DirEntry>, AccessError>> {
        let max = self.target.limits.max_dir_entries;
        let r = match self.resolve_or_refuse("list-dir", &path) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let (rel, request, grant_file) = (r.rel, r.request, r.grant_file);
        Ok(blocking(r.dir, move |dir| {
            if grant_file {
                // A granted file is never a directory to list, and never
                // followed if it became a symlink.
                return Err(AccessError::Invalid(format!(
                    "{} is a granted file, not a directory",
                    request.display()
                )));
            }
            let mut entries = Vec::new();
            for entry in dir.read_dir(&rel).map_err(|e| access_error(&request, &e))? {
                let entry = entry.map_err(|e| access_error(&request, &e))?;
                if entries.len() == max {
                    return Err(AccessError::TooLarge(format!(
                        "{} has more than {max} entries",
                        request.display()
                    )));
                }
                let kind = entry
                    .file_type()
                    .map(entry_kind)
                    .unwrap_or(EntryKind::Other);
                entries.push(DirEntry {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    kind,
                });
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await)
    }
}
