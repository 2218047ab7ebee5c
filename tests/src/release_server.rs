//! A local stand-in for one GitHub repository's releases, on loopback: the
//! parts of the REST API that `plugin-registry publish` uploads through and
//! `plugin-registry capability-diff` lists releases from, and the download
//! layout that hosts (and `capability-diff`) fetch assets from,
//! `{url}/{owner}/{name}/releases/download/{tag}/{asset}`. Its URL serves
//! as `--api-url` and as `--server-url` (GitHub's API and server).

use std::sync::{Arc, Mutex};

use crate::http::{Reply, Request, Server};

/// One release.
#[derive(Debug, Clone)]
pub struct Release {
    /// Its id in the API.
    pub id: u64,
    /// Its tag, e.g. `kernel-params/v0.1.0`.
    pub tag: String,
    /// A draft (not published: listed only to a token holder, not
    /// downloadable).
    pub draft: bool,
    /// Its description.
    pub body: String,
    /// Its assets, in upload order.
    pub assets: Vec<(String, Vec<u8>)>,
}

/// The repository's releases, as the server holds them.
#[derive(Debug, Default)]
struct State {
    releases: Vec<Release>,
    next_id: u64,
}

/// A running release server for repository `repo`; stops when dropped.
pub struct ReleaseServer {
    server: Server,
    repo: String,
    state: Arc<Mutex<State>>,
}

/// `%2F` → `/` (and any other `%XX`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn release_json(r: &Release, base: &str, repo: &str) -> serde_json::Value {
    let assets: Vec<serde_json::Value> = r
        .assets
        .iter()
        .map(|(name, bytes)| {
            serde_json::json!({
                "name": name,
                "size": bytes.len(),
                "browser_download_url": format!("{base}/{repo}/releases/download/{}/{name}", r.tag),
            })
        })
        .collect();
    serde_json::json!({
        "id": r.id,
        "tag_name": r.tag,
        "name": r.tag,
        "draft": r.draft,
        "prerelease": false,
        "body": r.body,
        "html_url": format!("{base}/{repo}/releases/tag/{}", r.tag),
        "upload_url": format!("{base}/uploads/repos/{repo}/releases/{}/assets{{?name,label}}", r.id),
        "assets": assets,
    })
}

fn handle(req: &Request, repo: &str, state: &Mutex<State>) -> Reply {
    let base = format!(
        "http://{}",
        req.headers.get("host").cloned().unwrap_or_default()
    );
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let path = percent_decode(path);
    let api = format!("/repos/{repo}/releases");
    let uploads = format!("/uploads/repos/{repo}/releases/");
    let downloads = format!("/{repo}/releases/download/");
    let authorized = req
        .headers
        .get("authorization")
        .is_some_and(|a| a.starts_with("Bearer "));
    let mut state = state.lock().unwrap();
    match req.method.as_str() {
        "GET" if path == api => {
            // Newest first, paged as GitHub pages (drafts only with a token).
            let per_page: usize = query_value(query, "per_page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30);
            let page: usize = query_value(query, "page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let listed: Vec<serde_json::Value> = state
                .releases
                .iter()
                .rev()
                .filter(|r| authorized || !r.draft)
                .skip(per_page * (page.max(1) - 1))
                .take(per_page)
                .map(|r| release_json(r, &base, repo))
                .collect();
            Reply::json(200, serde_json::Value::Array(listed))
        }
        "GET" if path.starts_with(&format!("{api}/tags/")) => {
            let tag = &path[api.len() + "/tags/".len()..];
            match state.releases.iter().find(|r| r.tag == tag) {
                Some(r) => Reply::json(200, release_json(r, &base, repo)),
                None => Reply::json(404, serde_json::json!({"message": "Not Found"})),
            }
        }
        "POST" if path == api => {
            if !authorized {
                return Reply::json(401, serde_json::json!({"message": "Bad credentials"}));
            }
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let tag = body["tag_name"].as_str().unwrap_or_default().to_string();
            state.next_id += 1;
            let release = Release {
                id: state.next_id,
                tag,
                draft: body["draft"].as_bool().unwrap_or(false),
                body: body["body"].as_str().unwrap_or_default().to_string(),
                assets: Vec::new(),
            };
            let json = release_json(&release, &base, repo);
            state.releases.push(release);
            Reply::json(201, json)
        }
        "PATCH" if path.starts_with(&format!("{api}/")) => {
            if !authorized {
                return Reply::json(401, serde_json::json!({"message": "Bad credentials"}));
            }
            let id: u64 = path[api.len() + 1..].parse().unwrap_or(0);
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            match state.releases.iter_mut().find(|r| r.id == id) {
                Some(r) => {
                    if let Some(text) = body["body"].as_str() {
                        r.body = text.to_string();
                    }
                    if let Some(draft) = body["draft"].as_bool() {
                        r.draft = draft;
                    }
                    Reply::json(200, release_json(r, &base, repo))
                }
                None => Reply::json(404, serde_json::json!({"message": "Not Found"})),
            }
        }
        "POST" if path.starts_with(&uploads) => {
            if !authorized {
                return Reply::json(401, serde_json::json!({"message": "Bad credentials"}));
            }
            let id: u64 = path[uploads.len()..]
                .trim_end_matches("/assets")
                .parse()
                .unwrap_or(0);
            let Some(name) = query_value(query, "name").map(percent_decode) else {
                return Reply::json(422, serde_json::json!({"message": "name is required"}));
            };
            match state.releases.iter_mut().find(|r| r.id == id) {
                Some(r) if r.assets.iter().any(|(n, _)| *n == name) => Reply::json(
                    422,
                    serde_json::json!({"message": "Validation Failed", "errors": [{"code": "already_exists"}]}),
                ),
                Some(r) => {
                    r.assets.push((name, req.body.clone()));
                    Reply::json(201, serde_json::json!({}))
                }
                None => Reply::json(404, serde_json::json!({"message": "Not Found"})),
            }
        }
        "GET" if path.starts_with(&downloads) => {
            // `{tag}/{asset}`: the tag has a `/` itself, the asset none.
            let rest = &path[downloads.len()..];
            let Some((tag, asset)) = rest.rsplit_once('/') else {
                return Reply::not_found();
            };
            state
                .releases
                .iter()
                .filter(|r| !r.draft && r.tag == tag)
                .flat_map(|r| r.assets.iter())
                .find(|(n, _)| n == asset)
                .map_or_else(Reply::not_found, |(_, bytes)| Reply::bytes(bytes.clone()))
        }
        _ => Reply::not_found(),
    }
}

impl ReleaseServer {
    /// Serve the releases of `repo` (`owner/name`), none yet.
    pub fn start(repo: &str) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let server = {
            let (repo, state) = (repo.to_string(), state.clone());
            Server::start(move |req: &Request| handle(req, &repo, &state))
        };
        ReleaseServer {
            server,
            repo: repo.to_string(),
            state,
        }
    }

    /// `http://127.0.0.1:port`: the API and server URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `owner/name`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The base URL of the release layout
    /// (`{base}/{plugin}/v{version}/{asset}`), a host's registry `url`.
    pub fn download_base(&self) -> String {
        format!("{}/{}/releases/download", self.url(), self.repo)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.server.requests.lock().unwrap().clone()
    }

    /// The releases, oldest first.
    pub fn releases(&self) -> Vec<Release> {
        self.state.lock().unwrap().releases.clone()
    }

    /// Add a release directly (without the API), e.g. a draft or one
    /// without assets.
    pub fn add_release(&self, tag: &str, draft: bool, assets: Vec<(String, Vec<u8>)>) {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = state.next_id;
        state.releases.push(Release {
            id,
            tag: tag.to_string(),
            draft,
            body: String::new(),
            assets,
        });
    }

    /// Replace the bytes of a published asset (a tampered release).
    pub fn replace_asset(&self, tag: &str, name: &str, bytes: Vec<u8>) {
        let mut state = self.state.lock().unwrap();
        let asset = state
            .releases
            .iter_mut()
            .filter(|r| r.tag == tag)
            .flat_map(|r| r.assets.iter_mut())
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no asset {name} in release {tag}"));
        asset.1 = bytes;
    }
}
