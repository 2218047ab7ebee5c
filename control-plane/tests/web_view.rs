//! The web view in a real browser: headless Chromium (Debian's
//! `chromium` and `chromium-driver`, installed by scripts/test.sh) driven
//! over WebDriver against the real control-plane binary, with data posted
//! over its HTTP API as runtimes would. Screenshots go to
//! `target/screenshots/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_assessment-control-plane");
const ADMIN_TOKEN: &str = "web-admin-token-0123456789";

/// The first of `names` found on the PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// chromedriver, or why the test cannot run: Debian's (`chromium-driver`,
/// which scripts/test.sh installs), or the one a CI image provides
/// (`CHROMEWEBDRIVER`, as GitHub's Ubuntu runners set). Where the suite
/// installed it (REQUIRE_CHROMIUM) or on CI, a missing driver fails the
/// test.
fn chromedriver() -> Option<PathBuf> {
    let found = std::env::var_os("CHROMEWEBDRIVER")
        .map(|dir| PathBuf::from(dir).join("chromedriver"))
        .filter(|path| path.is_file())
        .or_else(|| on_path(&["chromedriver"]))
        .or_else(|| Some(PathBuf::from("/usr/lib/chromium/chromedriver")).filter(|p| p.is_file()));
    let required = std::env::var_os("REQUIRE_CHROMIUM").is_some()
        || std::env::var("CI").is_ok_and(|v| v == "true");
    match found {
        Some(path) => Some(path),
        None if required => panic!(
            "chromedriver is not installed: `apt-get install chromium chromium-driver` (scripts/test.sh does)"
        ),
        None => {
            eprintln!(
                "SKIPPED: chromedriver is not installed (apt-get install chromium chromium-driver)"
            );
            None
        }
    }
}

/// The browser chromedriver is to start: Debian's Chromium, else a Chrome
/// on the PATH (a CI image's), else chromedriver's own default.
fn browser_binary() -> Option<PathBuf> {
    Some(PathBuf::from("/usr/bin/chromium"))
        .filter(|p| p.is_file())
        .or_else(|| on_path(&["chromium", "google-chrome", "google-chrome-stable"]))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The control plane on an ephemeral port over plain HTTP (loopback).
async fn start_server(database: &std::path::Path) -> (Child, String) {
    let mut server = Command::new(BIN)
        .args(["--database"])
        .arg(database)
        .args(["serve", "--dev-plain-http", "--listen", "127.0.0.1:0"])
        .env("ACP_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info")
        .env_remove("ACP_DATABASE")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let address = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("control plane listening") {
                let start = line.find("address=").unwrap() + "address=".len();
                return line[start..].split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (server, format!("http://{address}"))
}

/// chromedriver, and the browser it starts with a profile directory of
/// its own: when this is dropped (a failed test included), chromedriver is
/// killed and so is every process whose command line names that profile
/// directory (Chromium's), each by its own pid, so no browser outlives the
/// test.
struct Driver {
    _chromedriver: Child,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let marker = self.profile.path().to_string_lossy().into_owned();
        let own = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid <= 1 || pid == own {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&marker) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// chromedriver on a free port, and a headless Chromium session through it.
async fn start_browser(driver: &PathBuf) -> (Driver, Client) {
    let port = free_port();
    let chromedriver = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let profile = tempfile::Builder::new()
        .prefix("web-view-chromium-")
        .tempdir()
        .unwrap();
    let user_data_dir = format!("--user-data-dir={}", profile.path().display());
    let chromedriver = Driver {
        _chromedriver: chromedriver,
        profile,
    };
    let mut capabilities = serde_json::Map::new();
    let mut options = json!({
        "args": [user_data_dir, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,900", "--no-first-run", "--disable-extensions"]
    });
    if let Some(binary) = browser_binary() {
        options["binary"] = json!(binary);
    }
    capabilities.insert("goog:chromeOptions".to_string(), options);
    let url = format!("http://127.0.0.1:{port}");
    let mut last_error = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (chromedriver, client),
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot start a Chromium session: {last_error:?}");
}

/// A runtime enrolled over the API: (id, access token).
async fn runtime(http: &reqwest::Client, url: &str, name: &str) -> (String, String) {
    let token: Value = http
        .post(format!("{url}/v1/admin/enrollment-tokens"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let enrolled: Value = http
        .post(format!("{url}/v1/enroll"))
        .json(&json!({"token": token["token"], "name": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = enrolled["runtime_id"].as_str().unwrap().to_string();
    let access: Value = http
        .post(format!("{url}/api/auth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", enrolled["client_secret"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (id, access["access_token"].as_str().unwrap().to_string())
}

/// One finding as the runtime turns it into evidence.
struct Finding<'a> {
    stream: &'a str,
    plugin: &'a str,
    check: &'a str,
    title: &'a str,
    failing: bool,
    severity: &'a str,
    reference: &'a str,
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    runtime: &(String, String),
    key: &str,
    f: &Finding<'_>,
) {
    let (id, token) = runtime;
    let evidence = json!({
        "uuid": f.stream,
        "title": f.title,
        "description": if f.failing { "the setting is not as required" } else { "as required" },
        "start": "2027-01-15T08:00:00Z",
        "end": "2027-01-15T08:00:01Z",
        "labels": {"plugin": f.plugin, "check": f.check, "severity": f.severity},
        "status": {"state": if f.failing {"not-satisfied"} else {"satisfied"}, "reason": if f.failing {"fail"} else {"pass"}},
        "subjects": [{"type": "InventoryItem", "identifier": id}],
        "props": [{"name": "reference", "value": f.reference}],
        "remarks": "Set it in the configuration and reload the service."
    });
    let response = http
        .post(format!("{url}/v1/evidence/batch"))
        .bearer_auth(token)
        .json(&json!({"records": [{"idempotency_key": key, "evidence": evidence}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

async fn heartbeat(http: &reqwest::Client, url: &str, runtime: &(String, String)) {
    let (id, token) = runtime;
    let response = http
        .post(format!("{url}/api/agent/heartbeat"))
        .bearer_auth(token)
        .json(&json!({
            "uuid": id,
            "created_at": chrono::Utc::now().to_rfc3339(),
            "runtime_version": "0.4.0",
            "plugins": {"sshd-hardening": "ready", "kernel-params": "ready", "file-permissions": "pending"},
            "jobs": {}
        }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Clicks the element `css` and waits until the page it leads to has
/// loaded (the old document carries a marker the new one lacks).
async fn click_and_wait(browser: &Client, css: &str) {
    browser
        .execute("window.__before_click = true", vec![])
        .await
        .unwrap();
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for _ in 0..200 {
        let loaded = browser
            .execute(
                "return window.__before_click === undefined && document.readyState === 'complete'",
                vec![],
            )
            .await
            .unwrap_or(Value::Bool(false));
        if loaded == Value::Bool(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("clicking {css} led to no new page");
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn rows(browser: &Client, table: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for row in browser
        .find_all(Locator::Css(&format!("{table} tbody tr")))
        .await
        .unwrap()
    {
        texts.push(row.text().await.unwrap());
    }
    texts
}

#[tokio::test]
async fn the_web_view_in_headless_chromium() {
    let Some(driver) = chromedriver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(&dir.path().join("cp.db")).await;
    let http = reqwest::Client::new();

    // A small fleet: three machines, three plugins, a check that fails on
    // two of them, one stream with a history.
    let web1 = runtime(&http, &url, "web-1").await;
    let web2 = runtime(&http, &url, "web-2").await;
    let db1 = runtime(&http, &url, "db-1").await;
    let root_login = uuid::Uuid::new_v4().to_string();
    let checks = [
        (
            "sshd-hardening",
            "permit-root-login",
            "Root login over SSH is disabled",
            "high",
            "CIS 5.2.8",
        ),
        (
            "sshd-hardening",
            "password-authentication",
            "Password authentication is disabled",
            "medium",
            "CIS 5.2.10",
        ),
        (
            "kernel-params",
            "ip-forward",
            "IPv4 forwarding is disabled",
            "medium",
            "CIS 3.1.1",
        ),
        (
            "file-permissions",
            "etc-shadow",
            "/etc/shadow is readable only by root",
            "high",
            "CIS 6.1.3",
        ),
    ];
    // web-1's root-login stream passed on an earlier run.
    let earlier = Finding {
        stream: &root_login,
        plugin: "sshd-hardening",
        check: "permit-root-login",
        title: "Root login over SSH is disabled",
        failing: false,
        severity: "high",
        reference: "CIS 5.2.8",
    };
    send(&http, &url, &web1, "earlier", &earlier).await;

    let mut key = 0;
    for (runtime, failing) in [
        (&web1, [true, false, false, false]),
        (&web2, [true, true, false, false]),
        (&db1, [false, false, true, false]),
    ] {
        heartbeat(&http, &url, runtime).await;
        for ((plugin, check, title, severity, reference), failing) in checks.iter().zip(failing) {
            key += 1;
            let stream = if runtime.0 == web1.0 && *check == "permit-root-login" {
                root_login.clone()
            } else {
                uuid::Uuid::new_v4().to_string()
            };
            let finding = Finding {
                stream: &stream,
                plugin,
                check,
                title,
                failing,
                severity,
                reference,
            };
            send(&http, &url, runtime, &key.to_string(), &finding).await;
        }
    }
    let (_chromedriver, browser) = start_browser(&driver).await;
    let shots = screenshots();

    // Not signed in: every page leads to the sign-in form.
    browser.goto(&format!("{url}/ui/results")).await.unwrap();
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/sign-in")
    );
    browser
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("not-the-token")
        .await
        .unwrap();
    click_and_wait(&browser, "button[type=submit]").await;
    assert!(
        text_of(&browser, ".notice.error")
            .await
            .contains("not the admin token")
    );
    browser
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    click_and_wait(&browser, "button[type=submit]").await;
    let current = browser.current_url().await.unwrap();
    assert_eq!(current.path(), "/ui/results");
    assert!(
        !current.as_str().contains(ADMIN_TOKEN),
        "no token in the URL"
    );

    // Results: the latest per stream, failing first.
    let results = rows(&browser, "#results").await;
    assert_eq!(results.len(), 12, "{results:#?}");
    let failing = results.iter().take_while(|r| r.starts_with("fail")).count();
    assert_eq!(failing, 4, "{results:#?}");
    assert!(results[4..].iter().all(|r| r.starts_with("pass")));
    let png = browser.screenshot().await.unwrap();
    std::fs::write(shots.join("web-view-results.png"), png).unwrap();

    // Filter: failing results of sshd-hardening on web-2.
    browser
        .find(Locator::Css(
            "select[name=status] option[value=not-satisfied]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Css(
            "select[name=plugin] option[value=sshd-hardening]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Css(&format!(
            "select[name=runtime] option[value='{}']",
            web2.0
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click_and_wait(&browser, "form.filters button[type=submit]").await;
    let filtered = rows(&browser, "#results").await;
    assert_eq!(filtered.len(), 2, "{filtered:#?}");
    assert!(
        filtered
            .iter()
            .all(|r| r.contains("web-2") && r.starts_with("fail"))
    );
    browser
        .goto(&format!(
            "{url}/ui/results?reference=CIS+3.1.1&status=not-satisfied"
        ))
        .await
        .unwrap();
    let by_reference = rows(&browser, "#results").await;
    assert_eq!(by_reference.len(), 1);
    assert!(by_reference[0].contains("db-1"));

    // One stream's history: web-1's root login, failing now, passing before.
    browser
        .goto(&format!(
            "{url}/ui/results?runtime={}&status=not-satisfied",
            web1.0
        ))
        .await
        .unwrap();
    click_and_wait(&browser, "#results a[href^='/ui/streams/']").await;
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        format!("/ui/streams/{root_login}")
    );
    let history = rows(&browser, "#history").await;
    assert_eq!(history.len(), 2, "{history:#?}");
    assert!(
        history[0].contains("fail") && history[1].contains("pass"),
        "{history:#?}"
    );

    // The per-check summary: root login fails on two machines of three.
    browser.goto(&format!("{url}/ui/summary")).await.unwrap();
    let summary = rows(&browser, "#summary").await;
    assert!(
        summary[0].contains("permit-root-login") && summary[0].contains("2 3"),
        "{summary:#?}"
    );

    // The fleet: names, fresh heartbeats, plugin states, configuration.
    browser.goto(&format!("{url}/ui/fleet")).await.unwrap();
    let fleet = rows(&browser, "#runtimes").await;
    assert_eq!(fleet.len(), 3);
    assert!(
        fleet
            .iter()
            .all(|r| r.contains("fresh") && r.contains("sshd-hardening: ready")),
        "{fleet:#?}"
    );
    std::fs::write(
        shots.join("web-view-fleet.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();
    // An enrollment token created from the page is shown once.
    click_and_wait(&browser, "form[action='/ui/enrollment-tokens'] button").await;
    let token = text_of(&browser, "#new-token .token").await;
    assert_eq!(token.len(), 64, "{token}");
    assert!(
        !browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains(&token)
    );
    // The same form without its CSRF token is refused.
    browser.goto(&format!("{url}/ui/fleet")).await.unwrap();
    browser
        .execute("document.querySelector(\"form[action='/ui/enrollment-tokens'] input[name=csrf]\").remove()", vec![])
        .await
        .unwrap();
    click_and_wait(&browser, "form[action='/ui/enrollment-tokens'] button").await;
    assert_eq!(text_of(&browser, "h1").await, "Form refused");

    // A hostile title renders as text: no script runs, no element appears.
    let hostile = Finding {
        stream: &uuid::Uuid::new_v4().to_string(),
        plugin: "sshd-hardening",
        check: "banner",
        title: "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">",
        failing: true,
        severity: "low",
        reference: "CIS 1.7.1",
    };
    send(&http, &url, &db1, "hostile", &hostile).await;
    browser
        .goto(&format!("{url}/ui/results?reference=CIS+1.7.1"))
        .await
        .unwrap();
    assert_eq!(text_of(&browser, "#results td.title").await, hostile.title);
    let pwned = browser
        .execute("return typeof window.pwned", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, json!("undefined"));
    assert!(
        browser
            .find_all(Locator::Css("#results img, #results script"))
            .await
            .unwrap()
            .is_empty()
    );

    // Sign out: the session is gone.
    click_and_wait(&browser, "form[action='/ui/sign-out'] button").await;
    browser.goto(&format!("{url}/ui/results")).await.unwrap();
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/sign-in")
    );
    browser.close().await.unwrap();
}
