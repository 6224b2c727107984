//! A small Chrome DevTools Protocol client for the browser test: starts Debian's
//! headless Chromium on a fresh profile, opens tabs, navigates, evaluates JavaScript,
//! takes screenshots, and keeps every protocol event so a test can list what went wrong
//! on a page (console errors, uncaught exceptions, failed or external requests).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// The Chromium binary (`CHROMIUM` overrides).
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

pub struct Event {
    pub method: String,
    pub session: Option<String>,
    pub params: Value,
}

pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    pub events: Vec<Event>,
    _profile: tempfile::TempDir,
}

/// One tab (a page target) attached in flat mode.
pub struct Tab {
    pub session: String,
}

fn devtools_port(profile: &Path, child: &mut Child) -> (u16, String) {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                if let Ok(port) = port.trim().parse() {
                    return (port, path.trim().to_string());
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("chromium exited before opening its DevTools port: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not open its DevTools port within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Browser {
    /// Starts headless Chromium (flags for running as root in a container or CI) and
    /// connects to its browser endpoint.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(chromium_path())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-background-timer-throttling",
                "--disable-backgrounding-occluded-windows",
                "--disable-renderer-backgrounding",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (scripts/install-test-peers.sh installs it)",
                    chromium_path().display()
                )
            });
        let (port, path) = devtools_port(profile.path(), &mut child);
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .expect("DevTools WebSocket handshake");
        Browser {
            child,
            ws,
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        }
    }

    /// Sends one command and waits for its answer, keeping the events that arrive
    /// meanwhile. A protocol error is returned as `Err`.
    pub fn call(
        &mut self,
        tab: Option<&Tab>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(t) = tab {
            msg["sessionId"] = json!(t.session);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .map_err(|e| format!("{method}: send: {e}"))?;
        loop {
            let m = self.ws.read().map_err(|e| format!("{method}: read: {e}"))?;
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(v["result"].clone());
            }
            if let Some(method) = v["method"].as_str() {
                self.events.push(Event {
                    method: method.to_string(),
                    session: v["sessionId"].as_str().map(str::to_string),
                    params: v["params"].clone(),
                });
            }
        }
    }

    fn must(&mut self, tab: Option<&Tab>, method: &str, params: Value) -> Value {
        self.call(tab, method, params)
            .unwrap_or_else(|e| panic!("DevTools: {e}"))
    }

    /// Opens a tab in its own window of `width`×`height` CSS pixels, with console,
    /// page and network events on.
    pub fn new_tab(&mut self, width: u32, height: u32) -> Tab {
        let target = self.must(
            None,
            "Target.createTarget",
            json!({"url": "about:blank", "newWindow": true, "width": width, "height": height}),
        );
        let attached = self.must(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        let tab = Tab {
            session: attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
        };
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            self.must(Some(&tab), domain, json!({}));
        }
        self.must(
            Some(&tab),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        self.must(
            Some(&tab),
            "Emulation.setFocusEmulationEnabled",
            json!({"enabled": true}),
        );
        tab
    }

    /// Navigates and waits until the document has loaded.
    pub fn navigate(&mut self, tab: &Tab, url: &str) {
        let r = self.must(Some(tab), "Page.navigate", json!({"url": url}));
        assert!(
            r.get("errorText").is_none(),
            "navigate to {url}: {}",
            r["errorText"]
        );
        let loaded = self.wait(
            tab,
            Duration::from_secs(15),
            "document.readyState === 'complete'",
        );
        assert!(loaded.is_some(), "{url} did not finish loading within 15 s");
    }

    /// Evaluates `expr` in the page (promises awaited) and returns its JSON value.
    pub fn eval(&mut self, tab: &Tab, expr: &str) -> Value {
        let r = self.must(
            Some(tab),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("evaluating `{expr}` threw: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` every 50 ms until it is truthy; returns the value and how long it
    /// took, or `None` after `timeout`.
    pub fn wait(&mut self, tab: &Tab, timeout: Duration, expr: &str) -> Option<(Value, Duration)> {
        let start = Instant::now();
        loop {
            let v = self.eval(tab, expr);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(_) => true,
            };
            if truthy {
                return Some((v, start.elapsed()));
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the whole page (not only the viewport).
    pub fn screenshot(&mut self, tab: &Tab) -> Vec<u8> {
        use base64::Engine;
        let metrics = self.must(Some(tab), "Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let clip =
            json!({"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1});
        let r = self.must(
            Some(tab),
            "Page.captureScreenshot",
            json!({"format": "png", "clip": clip, "captureBeyondViewport": true}),
        );
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64")
    }

    /// Switches the page's `prefers-color-scheme`.
    pub fn color_scheme(&mut self, tab: &Tab, scheme: &str) {
        self.must(
            Some(tab),
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
    }

    /// Index of the next event, to look at what happens from now on.
    pub fn mark(&self) -> usize {
        self.events.len()
    }

    /// What went wrong in `tab` since event `from`: console errors, uncaught
    /// exceptions, failed requests, HTTP errors, and requests to any origin but
    /// `origin`. A request cancelled because its page was left (an event stream) is
    /// not a failure.
    pub fn problems(&self, tab: &Tab, from: usize, origin: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mine = |e: &&Event| e.session.as_deref() == Some(tab.session.as_str());
        let started_here: std::collections::HashMap<&str, &str> = self.events[from..]
            .iter()
            .filter(mine)
            .filter(|e| e.method == "Network.requestWillBeSent")
            .filter_map(|e| {
                Some((
                    e.params["requestId"].as_str()?,
                    e.params["request"]["url"].as_str().unwrap_or("?"),
                ))
            })
            .collect();
        for e in self.events[from..].iter().filter(mine) {
            let p = &e.params;
            match e.method.as_str() {
                "Runtime.exceptionThrown" => out.push(format!(
                    "uncaught exception: {}",
                    p["exceptionDetails"]["exception"]["description"]
                        .as_str()
                        .unwrap_or_else(|| p["exceptionDetails"]["text"].as_str().unwrap_or("?"))
                )),
                "Runtime.consoleAPICalled"
                    if matches!(p["type"].as_str(), Some("error" | "assert")) =>
                {
                    out.push(format!("console.{}: {}", p["type"], p["args"]))
                }
                "Log.entryAdded" if p["entry"]["level"] == "error" => out.push(format!(
                    "console error: {} {}",
                    p["entry"]["text"],
                    p["entry"]["url"].as_str().unwrap_or("")
                )),
                "Network.requestWillBeSent" => {
                    let url = p["request"]["url"].as_str().unwrap_or("");
                    if !url.starts_with(origin) && !url.starts_with("data:") && url != "about:blank"
                    {
                        out.push(format!("request to another origin: {url}"));
                    }
                }
                "Network.responseReceived" => {
                    let status = p["response"]["status"].as_u64().unwrap_or(0);
                    if status >= 400 {
                        out.push(format!("HTTP {status}: {}", p["response"]["url"]));
                    }
                }
                "Network.loadingFailed" => {
                    let id = p["requestId"].as_str().unwrap_or("");
                    let url = started_here.get(id);
                    let left_page = p["canceled"] == true && url.is_none();
                    if !left_page {
                        out.push(format!(
                            "request failed: {} ({} {})",
                            p["errorText"],
                            p["type"].as_str().unwrap_or(""),
                            url.unwrap_or(&"?")
                        ));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call(None, "Browser.close", json!({}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
