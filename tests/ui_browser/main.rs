//! The web UI in a real browser (headless Chromium over the DevTools protocol) against
//! the lab: every page loads with no console error, no failed request and nothing
//! fetched from another origin; the overview lists every lab guest; a chart's newest
//! point advances within 3 s; `vadv-lab-2`, suspended during the test, shows `Paused`
//! in the overview and a `Suspended` event in its page's timeline within 2 s (it is
//! resumed at the end, also when the test fails). With `VADVISOR_UI_SCREENSHOTS=<dir>`
//! the pages are also saved as PNGs there (scripts/ui-screenshots.sh → docs/).

mod cdp;
#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cdp::{Browser, Tab};
use common::{lab_guests, virsh, wait_for, Agent};

const GUEST: &str = "vadv-lab-2";

const CONFIG: &str = "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\n\
collectors:\n  cpu: {}\n  memory: {}\n  block: {}\n  net: {}\n  events: {}\n  specs: {}\n\
sinks:\n  rest: {}\n  events:\n    path: ':memory:'\n  ui: {}\n";

/// Resumes the guest if it is paused, whatever happened in the test.
struct ResumeOnDrop(&'static str);

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        let state = std::process::Command::new("virsh")
            .args(["-c", "qemu:///system", "domstate", self.0])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if state == "paused" {
            let _ = std::process::Command::new("virsh")
                .args(["-c", "qemu:///system", "resume", self.0])
                .status();
        }
    }
}

fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("VADVISOR_UI_SCREENSHOTS").map(PathBuf::from)
}

fn save(browser: &mut Browser, tab: &Tab, name: &str) {
    if let Some(dir) = screenshot_dir() {
        let png = browser.screenshot(tab);
        let path = dir.join(name);
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("screenshot: {} ({} bytes)", path.display(), png.len());
    }
}

fn assert_clean(browser: &Browser, tab: &Tab, from: usize, origin: &str, page: &str) {
    let problems = browser.problems(tab, from, origin);
    assert!(problems.is_empty(), "{page}: {problems:#?}");
}

/// The overview's rows: `[name, state cell text]`.
const ROWS: &str = "[...document.querySelectorAll('#domains tbody tr')].map(r => [r.cells[0].textContent, r.cells[1].textContent])";

#[test]
#[ignore = "needs the lab and chromium: scripts/lab.sh up, scripts/install-test-peers.sh"]
fn ui_pages_in_headless_chromium() {
    let guests = lab_guests();
    let uuid = guests
        .iter()
        .find(|(n, _)| n == GUEST)
        .map(|(_, u)| u.clone())
        .unwrap_or_else(|| panic!("{GUEST} is not running: scripts/lab.sh up"));
    let _resume = ResumeOnDrop(GUEST);
    let agent = Agent::start(CONFIG);
    let origin = agent.base.clone();
    // Some history for the charts (and the screenshots).
    let want = if screenshot_dir().is_some() { 30 } else { 4 };
    wait_for(Duration::from_secs(want as u64 + 20), || {
        // 404 until the first sample.
        let r = agent.get(&format!("/api/v1.0/stats/{uuid}")).ok()?;
        let v: serde_json::Value = r.json().ok()?;
        (v[&uuid].as_array().map_or(0, Vec::len) >= want).then_some(())
    })
    .expect("the agent has a few samples of the guest");

    let mut browser = Browser::launch();

    // ---- Overview: every lab guest listed, health header filled, sortable.
    let ov = browser.new_tab(1440, 460);
    let ov_from = browser.mark();
    browser.navigate(&ov, &format!("{origin}/"));
    let names: Vec<String> = guests.iter().map(|(n, _)| n.clone()).collect();
    let check = format!(
        "(() => {{ const rows = {ROWS}; const names = rows.map(r => r[0]); \
         return {names:?}.every(n => names.includes(n)) && rows.every(r => r[1].trim() !== '') ? rows : null; }})()"
    );
    let listed = browser.wait(&ov, Duration::from_secs(10), &check);
    let rows = browser.eval(&ov, ROWS);
    assert!(
        listed.is_some(),
        "overview does not list every lab guest {names:?}: {rows}"
    );
    let health = browser.wait(
        &ov,
        Duration::from_secs(5),
        "document.getElementById('health').textContent.includes('libvirt connected') && document.getElementById('health').textContent",
    );
    assert!(
        health.is_some(),
        "health header: {}",
        browser.eval(&ov, "document.getElementById('health').textContent")
    );
    // Every guest's CPU % of its vCPUs is a number once two samples are in.
    let cpu = browser.wait(
        &ov,
        Duration::from_secs(5),
        "[...document.querySelectorAll('#domains tbody tr td[data-key=cpu_vcpus]')].every(td => /%/.test(td.textContent))",
    );
    assert!(cpu.is_some(), "CPU % column: {}", browser.eval(&ov, ROWS));
    // Sorting: the Name header toggles to descending.
    browser.eval(
        &ov,
        "document.querySelector('th[data-key=name] button').click()",
    );
    let sorted = browser.eval(
        &ov,
        "(() => { const th = document.querySelector('th[data-key=name]'); const n = [...document.querySelectorAll('#domains tbody tr')].map(r => r.cells[0].textContent); \
         return th.getAttribute('aria-sort') === 'descending' && n.join() === [...n].sort((a, b) => b.localeCompare(a, 'en', {numeric: true})).join(); })()",
    );
    assert_eq!(sorted, true, "descending sort by name");
    browser.eval(
        &ov,
        "document.querySelector('th[data-key=name] button').click()",
    );

    // ---- VM page: charts advance, spec table and JSON.
    let vm = browser.new_tab(1440, 1000);
    let vm_from = browser.mark();
    browser.navigate(&vm, &format!("{origin}/ui/vm?id={uuid}"));
    let charts = browser.wait(
        &vm,
        Duration::from_secs(10),
        "['chart-cpu','chart-vcpu','chart-memory','chart-disk-bytes','chart-disk-iops','chart-net-bytes','chart-net-packets'].every(id => document.getElementById(id).dataset.newest !== '')",
    );
    assert!(
        charts.is_some(),
        "charts without data: {}",
        browser.eval(&vm, "[...document.querySelectorAll('figure.chart')].map(f => f.id + '=' + f.dataset.newest).join(' ')")
    );
    let newest = "Number(document.getElementById('chart-cpu').dataset.newest)";
    let t0 = browser.eval(&vm, newest).as_f64().expect("newest point");
    let advanced = browser.wait(&vm, Duration::from_secs(3), &format!("{newest} > {t0}"));
    let (_, took) = advanced.expect("the CPU chart's newest point did not advance within 3 s");
    eprintln!("CPU chart's newest point advanced after {took:?}");
    let devices = browser.wait(
        &vm,
        Duration::from_secs(10),
        "[...document.querySelectorAll('#devices tbody tr th')].map(th => th.textContent)",
    );
    let devices = devices.expect("devices table").0;
    assert!(
        devices
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "disk")),
        "devices table lists the disk: {devices}"
    );
    let json_len = browser.eval(
        &vm,
        "document.getElementById('spec-json').textContent.length",
    );
    assert!(json_len.as_u64().unwrap_or(0) > 100, "full spec JSON");
    assert_eq!(
        browser.eval(&vm, "document.getElementById('title').textContent"),
        GUEST
    );

    // ---- Events page: the live stream is connected.
    let ev = browser.new_tab(1440, 800);
    let ev_from = browser.mark();
    browser.navigate(&ev, &format!("{origin}/ui/events"));
    let live = browser.wait(
        &ev,
        Duration::from_secs(10),
        "document.getElementById('stream-status').textContent === 'Live'",
    );
    assert!(
        live.is_some(),
        "events page stream: {}",
        browser.eval(&ev, "document.getElementById('stream-status').textContent")
    );
    // The VM page's stream too, before the guest is suspended.
    let vm_live = browser.wait(&vm, Duration::from_secs(10), "document.getElementById('events-status').textContent.startsWith('Live') || document.getElementById('events-status').textContent.startsWith('No event')");
    assert!(
        vm_live.is_some(),
        "VM page events: {}",
        browser.eval(&vm, "document.getElementById('events-status').textContent")
    );

    if screenshot_dir().is_some() {
        save(&mut browser, &ov, "ui-overview.png");
    }

    // ---- Suspend the guest: Paused in the overview, Suspended in its timeline, ≤ 2 s.
    virsh(&["suspend", GUEST]);
    let start = Instant::now();
    let paused_expr = format!("{ROWS}.some(r => r[0] === '{GUEST}' && r[1].startsWith('Paused'))");
    let event_expr = "document.querySelector('#timeline li[data-type=Suspended]') !== null";
    let (mut paused_at, mut event_at) = (None, None);
    while start.elapsed() < Duration::from_secs(5) && (paused_at.is_none() || event_at.is_none()) {
        if paused_at.is_none() && browser.eval(&ov, &paused_expr) == true {
            paused_at = Some(start.elapsed());
        }
        if event_at.is_none() && browser.eval(&vm, event_expr) == true {
            event_at = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("after virsh suspend: Paused in the overview after {paused_at:?}, Suspended in the timeline after {event_at:?}");
    let limit = Duration::from_secs(2);
    assert!(
        paused_at.is_some_and(|t| t <= limit),
        "{GUEST} not Paused in the overview within 2 s ({paused_at:?}): {}",
        browser.eval(&ov, ROWS)
    );
    assert!(
        event_at.is_some_and(|t| t <= limit),
        "no Suspended event in {GUEST}'s timeline within 2 s ({event_at:?}): {}",
        browser.eval(&vm, "document.getElementById('timeline').textContent")
    );
    let facts = browser.wait(
        &vm,
        Duration::from_secs(3),
        "document.getElementById('fact-state').textContent.startsWith('Paused')",
    );
    assert!(facts.is_some(), "VM page state fact shows Paused");

    virsh(&["resume", GUEST]);
    let resumed = browser.wait(
        &vm,
        Duration::from_secs(3),
        "document.querySelector('#timeline li[data-type=Resumed]') !== null",
    );
    assert!(resumed.is_some(), "Resumed event in the timeline");
    let running = browser.wait(
        &ov,
        Duration::from_secs(3),
        &format!("{ROWS}.some(r => r[0] === '{GUEST}' && r[1].startsWith('Running'))"),
    );
    assert!(running.is_some(), "{GUEST} Running again in the overview");

    // ---- Events page filters: only Suspended events of the guest.
    let seen = browser.wait(&ev, Duration::from_secs(3), &format!("[...document.querySelectorAll('#events tbody tr')].some(r => r.dataset.domain === '{GUEST}' && r.classList.contains('ev-Suspended'))"));
    assert!(seen.is_some(), "events page shows the Suspended event");
    let filtered = browser.eval(
        &ev,
        &format!(
            "(() => {{ const sel = document.getElementById('domain'); sel.value = '{uuid}'; sel.dispatchEvent(new Event('change')); \
             for (const c of document.querySelectorAll('#types input')) {{ c.checked = c.value === 'Suspended'; }} \
             document.getElementById('types').dispatchEvent(new Event('change')); \
             return [...document.querySelectorAll('#events tbody tr')].map(r => [r.dataset.domain, r.className]); }})()"
        ),
    );
    let rows = filtered.as_array().cloned().unwrap_or_default();
    assert!(!rows.is_empty(), "filtered events");
    assert!(
        rows.iter().all(|r| r[0] == GUEST && r[1] == "ev-Suspended"),
        "filters by domain and type: {filtered}"
    );
    browser.eval(
        &ev,
        "(() => { const sel = document.getElementById('domain'); sel.value = ''; sel.dispatchEvent(new Event('change')); \
         for (const c of document.querySelectorAll('#types input')) c.checked = true; \
         document.getElementById('types').dispatchEvent(new Event('change')); })()",
    );

    if screenshot_dir().is_some() {
        // A little more history after the resume, then the remaining pictures.
        std::thread::sleep(Duration::from_secs(3));
        save(&mut browser, &vm, "ui-vm.png");
        save(&mut browser, &ev, "ui-events.png");
        browser.color_scheme(&vm, "dark");
        std::thread::sleep(Duration::from_millis(1500));
        save(&mut browser, &vm, "ui-vm-dark.png");
    }

    // The VM page also takes the domain's name.
    let by_name_from = browser.mark();
    browser.navigate(&vm, &format!("{origin}/ui/vm?id={GUEST}"));
    let by_name = browser.wait(
        &vm,
        Duration::from_secs(10),
        &format!("document.getElementById('title').textContent === '{GUEST}' && document.getElementById('chart-cpu').dataset.newest !== ''"),
    );
    assert!(by_name.is_some(), "VM page by name");
    assert_clean(&browser, &vm, by_name_from, &origin, "VM page by name");

    assert_clean(&browser, &ov, ov_from, &origin, "overview");
    assert_clean(
        &browser,
        &vm,
        vm_from,
        &origin,
        "VM page (by UUID, and by name)",
    );
    assert_clean(&browser, &ev, ev_from, &origin, "events page");
}
