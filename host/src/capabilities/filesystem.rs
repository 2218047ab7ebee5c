//! `assessment:plugin/filesystem` (grant `read`): files of the assessed
//! system, reached only through the grants opened by [`super::target`], on
//! its bounded pool of blocking threads.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use cap_std::fs::MetadataExt;

use crate::bindings::latest::assessment::plugin::filesystem::{
    self, DirEntry, EntryKind, FileStat,
};
use crate::bindings::latest::assessment::plugin::types::AccessError;

use super::PluginState;
use super::provenance::FileFacts;
use super::target::{
    access_error, blocking, entry_kind, granted_metadata, open_regular, read_capped,
};

impl filesystem::Host for PluginState {
    async fn read_file(&mut self, path: String) -> wasmtime::Result<Result<Vec<u8>, AccessError>> {
        let max = self.target.limits.max_file_bytes;
        let r = match self.resolve_or_refuse("read-file", &path) {
            Ok(r) => r,
            Err(e) => return Ok(Err(self.unresolved_file("read-file", &path, e))),
        };
        let (rel, request, nofollow) = (r.rel, r.request.clone(), r.grant_file);
        let (facts, read) = blocking(r.dir, move |dir| {
            let mut facts = None;
            let read = open_regular(&dir, &rel, &request, nofollow).and_then(|file| {
                facts = file.metadata().ok().map(|m| FileFacts::of(&m));
                read_capped(file, max)
                    .map_err(|e| access_error(&request, &e))?
                    .ok_or_else(|| {
                        AccessError::TooLarge(format!(
                            "{} is larger than {max} bytes",
                            request.display()
                        ))
                    })
            });
            Ok((facts, read))
        })
        .await
        .unwrap_or_else(|e| (None, Err(e)));
        self.provenance.file(
            "read-file",
            &r.request,
            None,
            facts,
            read.as_deref().ok(),
            read.as_ref().err(),
        );
        Ok(read)
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
            Err(e) => return Ok(Err(self.unresolved_file("read-range", &path, e))),
        };
        if length > max {
            let e = AccessError::TooLarge(format!(
                "a window of {length} bytes of {} is larger than the {max}-byte limit; read it in smaller windows",
                r.request.display()
            ));
            self.provenance
                .file("read-range", &r.request, Some(offset), None, None, Some(&e));
            return Ok(Err(e));
        }
        let (rel, request, nofollow) = (r.rel, r.request.clone(), r.grant_file);
        let (facts, read) = blocking(r.dir, move |dir| {
            let mut facts = None;
            let read = open_regular(&dir, &rel, &request, nofollow).and_then(|mut file| {
                facts = file.metadata().ok().map(|m| FileFacts::of(&m));
                let mut buf = Vec::new();
                file.seek(SeekFrom::Start(offset))
                    .and_then(|_| file.take(length).read_to_end(&mut buf))
                    .map_err(|e| access_error(&request, &e))?;
                Ok(buf)
            });
            Ok((facts, read))
        })
        .await
        .unwrap_or_else(|e| (None, Err(e)));
        self.provenance.file(
            "read-range",
            &r.request,
            Some(offset),
            facts,
            read.as_deref().ok(),
            read.as_ref().err(),
        );
        Ok(read)
    }

    async fn stat(&mut self, path: String) -> wasmtime::Result<Result<FileStat, AccessError>> {
        let r = match self.resolve_or_refuse("stat", &path) {
            Ok(r) => r,
            Err(e) => return Ok(Err(self.unresolved_file("stat", &path, e))),
        };
        let (rel, request, nofollow) = (r.rel, r.request.clone(), r.grant_file);
        let stat = blocking(r.dir, move |dir| {
            let meta = granted_metadata(&dir, &rel, &request, nofollow)?;
            Ok((
                FileFacts::of(&meta),
                FileStat {
                    kind: entry_kind(meta.file_type()),
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size: meta.len(),
                    modified: meta.mtime(),
                    links: meta.nlink(),
                },
            ))
        })
        .await;
        let facts = stat.as_ref().ok().map(|(facts, _)| *facts);
        self.provenance
            .file("stat", &r.request, None, facts, None, stat.as_ref().err());
        Ok(stat.map(|(_, stat)| stat))
    }

    async fn list_dir(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Vec<DirEntry>, AccessError>> {
        let max = self.target.limits.max_dir_entries;
        let r = match self.resolve_or_refuse("list-dir", &path) {
            Ok(r) => r,
            Err(e) => {
                if !matches!(e, AccessError::Denied(_)) {
                    self.provenance.directory(Path::new(&path), Err(&e));
                }
                return Ok(Err(e));
            }
        };
        let (rel, request, grant_file) = (r.rel, r.request.clone(), r.grant_file);
        let listed = blocking(r.dir, move |dir| {
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
        .await;
        match &listed {
            Ok(entries) => {
                let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
                self.provenance.directory(&r.request, Ok(&names));
            }
            Err(e) => self.provenance.directory(&r.request, Err(e)),
        }
        Ok(listed)
    }
}

impl PluginState {
    /// A file call refused before it reached the file: a denial is already
    /// recorded as one; a path that is not there or not valid is recorded
    /// as the file access the plugin asked for.
    fn unresolved_file(&mut self, call: &str, path: &str, error: AccessError) -> AccessError {
        if !matches!(error, AccessError::Denied(_)) {
            self.provenance
                .file(call, Path::new(path), None, None, None, Some(&error));
        }
        error
    }
}
