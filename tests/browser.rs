//! A real browser for the console's tests: Debian's chromium, driven through chromedriver
//! (WebDriver) on a free loopback port, headless, one browser per test. Blocking methods over
//! fantoccini, so tests read top to bottom like the others.
//!
//! Without chromedriver a test is skipped with a note, except with `CI=true` (as `.ci/run`
//! sets it), where a missing browser fails the run: `./scripts/test` installs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::harness::free_port;

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    /// The console's base URL (`http://127.0.0.1:PORT`).
    pub base: String,
}

/// chromedriver, from Debian's chromium-driver.
fn driver_path() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The browser's console log (chromedriver's `goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

impl Browser {
    /// A headless browser pointed at squall on `port`; `None` (the test is skipped) when no
    /// chromedriver is installed and CI is not set.
    pub fn open(port: u16) -> Option<Browser> {
        let Some(driver) = driver_path() else {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "chromedriver is missing: ./scripts/test installs Debian's chromium and chromium-driver"
            );
            eprintln!("skipped: no chromedriver (install Debian's chromium-driver, or run ./scripts/test)");
            return None;
        };
        let driver_port = free_port();
        let driver = Command::new(driver)
            .arg(format!("--port={driver_port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                format!("--user-data-dir={}", profile.path().display()),
            ]}),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt = rt.block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&format!("http://127.0.0.1:{driver_port}")),
            );
            match attempt {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
            }
        };
        Some(Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("an open session")
    }

    /// Opens a path of the console.
    pub fn goto(&self, path: &str) {
        let url = format!("{}{}", self.base, path);
        self.rt
            .block_on(self.c().goto(&url))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Runs a script in the page; its return value.
    pub fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Waits until `script` (an expression) is truthy in the page, or panics with what the
    /// page held.
    pub fn wait_js(&self, script: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self
                .rt
                .block_on(self.c().execute(&format!("return ({script});"), Vec::new()))
                .unwrap_or(Value::Null);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "the page never had `{script}` within {secs} s; it was at {} with:\n{}",
                    self.url(),
                    self.text("main")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        self.rt
            .block_on(async {
                let el = self.c().find(Locator::Css(css)).await?;
                el.text().await
            })
            .unwrap_or_default()
    }

    pub fn click(&self, css: &str) {
        self.rt
            .block_on(async {
                let el = self.c().find(Locator::Css(css)).await?;
                el.click().await
            })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let el = self.c().find(Locator::Css(css)).await?;
                el.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// A cookie's value (WebDriver sees HttpOnly ones too).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.rt
            .block_on(self.c().get_named_cookie(name))
            .ok()
            .map(|c| c.value().to_string())
    }

    /// The browser console's entries at SEVERE level since the last call (errors, failed
    /// loads), as text.
    pub fn console_errors(&self) -> Vec<String> {
        let log = self
            .rt
            .block_on(self.c().issue_cmd(BrowserLog))
            .unwrap_or(Value::Null);
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// A screenshot of the page as PNG, written to `file`.
    pub fn screenshot(&self, file: &Path) {
        let png = self
            .rt
            .block_on(self.c().screenshot())
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(file, png).expect("screenshot written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where the console tests put their screenshots: the README's folder when
/// `SQUALL_SCREENSHOTS=docs` (to refresh them), else under the target folder.
pub fn screenshot_path(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match std::env::var("SQUALL_SCREENSHOTS").as_deref() {
        Ok("docs") => root.join("docs/console").join(name),
        _ => std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"))
            .join("console-screenshots")
            .join(name),
    }
}
