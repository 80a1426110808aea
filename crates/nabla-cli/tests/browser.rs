//! The playground in a real browser: headless Chromium driven over WebDriver (chromedriver).
//! Trains the spiral from the page until the displayed test accuracy passes 90%, checks that
//! the decision regions change, steps the inspector's backward pass in reverse order, and
//! shows a bad input's message. Screenshots go to `target/tmp/browser/` (or
//! `$NABLA_SCREENSHOTS`).
//!
//! Needs Debian's `chromium` and `chromium-driver`; skips without them unless
//! `NABLA_REQUIRE_BROWSER=1` (CI), where their absence fails with how to install them.

mod server;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use server::Server;

const INSTALL: &str =
    "install them with `sudo apt-get install chromium chromium-driver` (Debian/Ubuntu)";

/// Chromium and chromedriver, or why not.
fn find_browser() -> Result<(PathBuf, PathBuf), String> {
    let first = |names: &[&str]| {
        names
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| format!("none of {names:?} exists"))
    };
    let chromium = first(&[
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]);
    let driver = first(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    match (chromium, driver) {
        (Ok(c), Ok(d)) => Ok((c, d)),
        (c, d) => Err(format!(
            "Chromium and chromedriver are needed ({}; {}): {INSTALL}",
            c.err().unwrap_or_else(|| "chromium found".into()),
            d.err().unwrap_or_else(|| "chromedriver found".into())
        )),
    }
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_driver(path: &Path) -> (Driver, String) {
    let port = free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", path.display()));
    let driver = Driver(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (driver, format!("http://127.0.0.1:{port}"))
}

async fn connect(driver_url: &str, chromium: &Path, profile: &Path) -> Client {
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(driver_url)
        .await
        .expect("WebDriver session")
}

async fn text(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn type_into(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn select(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.select_by_value(value).await.unwrap();
}

/// Polls `check` every 100 ms until it gives `Some`, or panics naming `what` after `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn canvas(c: &Client) -> String {
    let v = c
        .execute(
            "return document.getElementById('regions').toDataURL('image/png');",
            vec![],
        )
        .await
        .unwrap();
    v.as_str().unwrap().to_string()
}

async fn screenshot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

fn percent(s: &str) -> Option<f64> {
    s.trim().trim_end_matches('%').parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_trains_inspects_and_reports_errors_in_chromium() {
    let (chromium, driver_path) = match find_browser() {
        Ok(found) => found,
        Err(why) if std::env::var_os("NABLA_REQUIRE_BROWSER").is_some() => panic!("{why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let out = std::env::var_os("NABLA_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser"));
    std::fs::create_dir_all(&out).unwrap();
    let profile =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromium-{}", std::process::id()));
    let server = Server::start(&[]);
    let (_driver, driver_url) = start_driver(&driver_path);
    let c = connect(&driver_url, &chromium, &profile).await;
    let result = run(&c, &server, &out).await;
    let _ = c.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    result
}

async fn run(c: &Client, server: &Server, out: &Path) {
    c.goto(&server.url()).await.unwrap();
    c.wait().for_element(Locator::Id("dataset")).await.unwrap();
    select(c, "dataset", "spiral").await;
    select(c, "speed", "100").await;

    // One step: the first regions are drawn.
    click(c, "step").await;
    wait_for(Duration::from_secs(20), "step 1", || async {
        (text(c, "step-count").await.trim() == "1").then_some(())
    })
    .await;
    let before = canvas(c).await;

    click(c, "start").await;
    let started = Instant::now();
    let acc = wait_for(
        Duration::from_secs(90),
        "test accuracy above 90%",
        || async { percent(&text(c, "test-accuracy").await).filter(|&a| a > 90.0) },
    )
    .await;
    eprintln!(
        "test accuracy {acc}% after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Let the charts fill a little for the picture, then compare the regions.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = canvas(c).await;
    assert_ne!(
        before, after,
        "the decision regions did not change while training"
    );
    screenshot(c, out, "playground.png").await;
    click(c, "pause").await;
    wait_for(Duration::from_secs(10), "paused", || async {
        (text(c, "state").await.trim() == "paused").then_some(())
    })
    .await;
    assert!(!text(c, "command").await.is_empty());

    inspector(c, out).await;
    bad_input(c).await;
}

async fn inspector(c: &Client, out: &Path) {
    click(c, "tab-inspector").await;
    click(c, "inspect").await;
    let rows = wait_for(Duration::from_secs(20), "the graph's ops", || async {
        let rows = c.find_all(Locator::Css("#ops tr.op")).await.ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    let mut ids = Vec::new();
    for r in &rows {
        ids.push(
            r.attr("data-id")
                .await
                .unwrap()
                .unwrap()
                .parse::<usize>()
                .unwrap(),
        );
    }
    let mut saved = 0u64;
    for cell in c
        .find_all(Locator::Css("#ops td[data-saved]"))
        .await
        .unwrap()
    {
        saved += cell
            .attr("data-saved")
            .await
            .unwrap()
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    assert!(saved > 0, "no op keeps bytes for backward");
    assert!(text(c, "saved-total").await.contains("kept for backward"));
    // Backward, one op per click, in reverse topological order: the loss first, then each
    // op after every op that uses its output.
    let mut expected = ids.clone();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    let mut stepped = Vec::new();
    for k in 0..expected.len() {
        click(c, "step-backward").await;
        let id = wait_for(
            Duration::from_secs(10),
            "the next backward step",
            || async {
                let cur = c.find(Locator::Css("#ops tr.op.current")).await.ok()?;
                let id: usize = cur.attr("data-id").await.ok()??.parse().ok()?;
                (stepped.last() != Some(&id)).then_some(id)
            },
        )
        .await;
        stepped.push(id);
        if k == 3 {
            screenshot(c, out, "inspector.png").await;
        }
    }
    assert_eq!(
        stepped, expected,
        "backward did not run in reverse topological order"
    );
    let log = c.find_all(Locator::Css("#backward-log li")).await.unwrap();
    assert_eq!(log.len(), expected.len());
    let button = c.find(Locator::Id("step-backward")).await.unwrap();
    assert!(
        !button.is_enabled().await.unwrap(),
        "step backward still enabled after the last op"
    );
}

async fn bad_input(c: &Client) {
    click(c, "tab-playground").await;
    // The previous case's message stays on the page until the next answer replaces it: wait for
    // a different one (CI once read the stale "lr" message for the "width" case).
    let mut previous = String::new();
    for (field, value, named) in [("lr", "abc", "lr"), ("hidden", "1000000000", "width")] {
        let original = c
            .find(Locator::Id(field))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default();
        type_into(c, field, value).await;
        click(c, "start").await;
        let msg = wait_for(Duration::from_secs(10), "an error message", || async {
            let e = c.find(Locator::Id("error")).await.ok()?;
            let t = e.text().await.ok()?;
            (e.is_displayed().await.ok()? && !t.is_empty() && t != previous).then_some(t)
        })
        .await;
        assert!(msg.contains(named), "'{msg}' does not name {named}");
        previous = msg;
        type_into(c, field, &original).await;
    }
}
