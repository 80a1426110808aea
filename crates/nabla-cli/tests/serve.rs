//! `nabla serve` over HTTP: every endpoint with good and bad input, the limits, the busy
//! answer, and a clean stop on SIGINT. (The page in a real browser: `browser.rs`.)

mod server;

use std::time::Duration;

use serde_json::json;
use server::{spiral_request, Server};

fn create(s: &Server, body: &str) -> serde_json::Value {
    let r = s.request("POST", "/api/sessions", Some(body));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[test]
fn page_and_assets_are_served_from_the_binary() {
    let s = Server::start(&[]);
    let page = s.request("GET", "/", None);
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("/assets/app.js"));
    for remote in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(
            !html.contains(remote),
            "the page loads something remote: {remote}"
        );
    }
    for asset in [
        "app.js",
        "style.css",
        "vendor/uPlot.iife.min.js",
        "vendor/uPlot.min.css",
    ] {
        let r = s.request("GET", &format!("/assets/{asset}"), None);
        assert_eq!(r.status, 200, "{asset}");
        assert!(!r.body.is_empty());
    }
    let missing = s.request("GET", "/assets/../Cargo.toml", None);
    assert_eq!(missing.status, 404);
    assert_eq!(s.request("GET", "/nope", None).status, 404);
    let o = s.request("GET", "/api/options", None).json();
    assert_eq!(o["limits"]["max_width"], 1024);
}

#[test]
fn a_run_trains_streams_saves_and_inspects() {
    let s = Server::start(&[]);
    // 300 steps per second: slow enough to watch, fast enough to learn in seconds.
    let info = create(&s, &spiral_request(|v| v["steps_per_second"] = json!(300)));
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(info["task"], "classification");
    assert_eq!(info["classes"], 3);
    assert_eq!(info["train"].as_array().unwrap().len(), 300);
    let cmd = info["command"].as_str().unwrap();
    assert!(
        cmd.starts_with("nabla train --dataset spiral --points 100"),
        "{cmd}"
    );

    // Paused until told: the first snapshot is step 0 with decision regions.
    let first = s
        .events_until(&id, Duration::from_secs(10), |_| true)
        .unwrap();
    assert_eq!(first["step"], 0);
    assert_eq!(first["grid"]["class"].as_array().unwrap().len(), 60 * 60);

    let r = s.request(
        "POST",
        &format!("/api/sessions/{id}/control"),
        Some(r#"{"action":"step"}"#),
    );
    assert_eq!(r.json()["state"], "running");
    let one = s
        .events_until(&id, Duration::from_secs(10), |v| v["step"] == 1)
        .expect("one step");
    assert_eq!(one["state"], "paused");
    assert!(one["layers"][0]["grad_norm"].as_f64().unwrap() > 0.0);

    s.request(
        "POST",
        &format!("/api/sessions/{id}/control"),
        Some(r#"{"action":"start"}"#),
    );
    // At least 10 updates per second while training (20 are sent): count them for 2 s.
    let (mut frames, started) = (0, std::time::Instant::now());
    s.events_until(&id, Duration::from_secs(30), |_| {
        frames += 1;
        started.elapsed() >= Duration::from_secs(2)
    });
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        frames as f64 >= 10.0 * seconds,
        "{frames} frames in {seconds:.1} s"
    );
    let good = s.events_until(&id, Duration::from_secs(120), |v| {
        v["test_accuracy"].as_f64().unwrap_or(0.0) > 0.9
    });
    assert!(good.is_some(), "test accuracy never passed 90%");
    let paused = s.request(
        "POST",
        &format!("/api/sessions/{id}/control"),
        Some(r#"{"action":"pause"}"#),
    );
    assert_eq!(paused.json()["state"], "paused");

    // The checkpoint is a nabla model file that `nabla info` reads.
    let ckpt = s.request("GET", &format!("/api/sessions/{id}/checkpoint"), None);
    assert_eq!(ckpt.status, 200);
    assert!(ckpt
        .header("content-disposition")
        .unwrap()
        .contains("attachment"));
    let dir = std::env::temp_dir().join(format!("nabla-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, &ckpt.body).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nabla"))
        .args(["info", "--checkpoint"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("spiral"));

    // The inspector: the graph of a batch, then backward one op at a time.
    let step_path = format!("/api/sessions/{id}/inspect/step");
    let early = s.request("POST", &step_path, Some("{}"));
    assert_eq!(early.status, 400);
    assert!(
        early.error().contains("inspect a batch first"),
        "{}",
        early.error()
    );
    let g = s
        .request("POST", &format!("/api/sessions/{id}/inspect"), Some("{}"))
        .json();
    // The last training batch (an epoch's last batch may be short).
    let batch = g["batch"].as_u64().unwrap();
    assert!((1..=32).contains(&batch), "{batch}");
    let nodes = g["nodes"].as_array().unwrap();
    let input = nodes.iter().find(|n| n["label"] == "input").unwrap();
    assert_eq!(input["shape"][0], batch);
    let order: Vec<u64> = g["backward_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(g["totals"]["saved_bytes"].as_u64().unwrap() > 0);
    let ops = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !n["op"].is_null())
        .count();
    assert_eq!(order.len(), ops);
    let mut ran = Vec::new();
    loop {
        let st = s.request("POST", &step_path, Some("{}")).json();
        ran.push(st["node"].as_u64().unwrap());
        if st["done"] == true {
            break;
        }
    }
    assert_eq!(ran, order);
    let after = s.request("POST", &step_path, Some("{}"));
    assert_eq!(after.status, 400);
    assert!(after.error().contains("complete"));

    // Reset: step 0 again.
    let r = s.request(
        "POST",
        &format!("/api/sessions/{id}/control"),
        Some(r#"{"action":"reset"}"#),
    );
    assert_eq!(r.status, 200);
    assert!(s
        .events_until(&id, Duration::from_secs(10), |v| v["step"] == 0)
        .is_some());
    assert_eq!(
        s.request("DELETE", &format!("/api/sessions/{id}"), None)
            .status,
        204
    );
    assert_eq!(
        s.request("GET", &format!("/api/sessions/{id}/checkpoint"), None)
            .status,
        404
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_requests_get_a_4xx_with_a_message() {
    let s = Server::start(&[]);
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "malformed request"),
        (spiral_request(|v| v["lr"] = json!("abc")), "lr"),
        (spiral_request(|v| v["lr"] = json!("NaN")), "lr"),
        (spiral_request(|v| v["lr"] = json!(-1.0)), "lr"),
        (
            spiral_request(|v| v["hidden"] = json!([1_000_000_000u64])),
            "width 1000000000",
        ),
        (
            spiral_request(|v| v["hidden"] = json!(vec![1; 1_000_000])),
            "1000000 layers",
        ),
        (spiral_request(|v| v["hidden"] = json!([])), "hidden"),
        (
            spiral_request(|v| v["points"] = json!(10_000_000)),
            "points",
        ),
        (spiral_request(|v| v["batch_size"] = json!(0)), "batch_size"),
        (spiral_request(|v| v["dataset"] = json!("mnist")), "dataset"),
        (
            spiral_request(|v| v["activation"] = json!("swishy")),
            "swishy",
        ),
        (spiral_request(|v| v["loss"] = json!("mse")), "mse"),
        (spiral_request(|v| v["surprise"] = json!(1)), "surprise"),
        (spiral_request(|v| v["dataset"] = json!("csv")), "csv"),
        (
            spiral_request(|v| {
                v["dataset"] = json!("csv");
                v["csv"] = json!("a,b\n1,x\n");
            }),
            "the uploaded CSV",
        ),
        (
            spiral_request(|v| v["steps_per_second"] = json!(-5)),
            "steps_per_second",
        ),
    ];
    for (body, want) in cases {
        let r = s.request("POST", "/api/sessions", Some(&body));
        let shown: String = body.chars().take(80).collect();
        assert_eq!(
            r.status,
            400,
            "{shown}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.error();
        assert!(e.contains(want), "{shown}: '{e}' does not name {want}");
    }
    // A 50 MB upload is refused from its declared length, without reading it.
    let big = s.raw(
        "POST",
        "/api/sessions",
        &["Content-Length: 52428800"],
        Some(b"{\"dataset\":"),
    );
    assert_eq!(big.status, 413);
    assert!(big.error().contains("limit"), "{}", big.error());
    // A body over the limit without a declared length (chunked) is refused too.
    let chunk = vec![b' '; 1 << 20];
    let mut body = Vec::new();
    for _ in 0..6 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let chunked = s.raw(
        "POST",
        "/api/sessions",
        &["Transfer-Encoding: chunked"],
        Some(&body),
    );
    assert_eq!(chunked.status, 413);
    // Bad controls and unknown runs.
    let id = create(&s, &spiral_request(|_| {}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.request(
        "POST",
        &format!("/api/sessions/{id}/control"),
        Some(r#"{"action":"fly"}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("fly"));
    for path in ["/api/sessions/999/control", "/api/sessions/abc/inspect"] {
        let r = s.request("POST", path, Some(r#"{"action":"start"}"#));
        assert_eq!(r.status, 404, "{path}");
        assert!(r.error().contains("no run"));
    }
    // The server survived all of it.
    assert_eq!(s.request("GET", "/api/options", None).status, 200);
}

fn start(s: &Server, id: &str) {
    let r = s.request(
        "POST",
        &format!("/api/sessions/{id}/control"),
        Some(r#"{"action":"start"}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// Threads of the server process (Linux).
fn threads(s: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", s.child.id())).map_or(0, |d| d.count())
}

#[test]
fn runs_past_the_limit_are_told_busy_and_closed_runs_end() {
    let s = Server::start(&["--max-sessions", "2"]);
    let body = spiral_request(|_| {});
    let a = create(&s, &body)["id"].as_str().unwrap().to_string();
    let b = create(&s, &body)["id"].as_str().unwrap().to_string();
    assert_ne!(a, b);
    assert!(a.len() >= 16, "guessable run id {a}");
    let r = s.request("POST", "/api/sessions", Some(&body));
    assert_eq!(r.status, 503);
    assert!(r.error().starts_with("busy"), "{}", r.error());
    // Both train at once.
    for id in [&a, &b] {
        start(&s, id);
    }
    for id in [&a, &b] {
        let moved = s.events_until(id, Duration::from_secs(30), |v| {
            v["step"].as_u64() > Some(50)
        });
        assert!(moved.is_some());
    }
    // Closing a run ends its thread, even while its stream is watched. (Thread pools the
    // training started stay: count while both runs train.)
    let running = threads(&s);
    let addr = s.addr.clone();
    let watched = a.clone();
    let watcher = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "GET /api/sessions/{watched}/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut sink = Vec::new();
        c.read_to_end(&mut sink).is_ok() // false: still open after 20 s
    });
    std::thread::sleep(Duration::from_millis(300));
    for id in [&a, &b] {
        assert_eq!(
            s.request("DELETE", &format!("/api/sessions/{id}"), None)
                .status,
            204
        );
    }
    assert!(
        watcher.join().unwrap(),
        "the closed run's event stream stayed open"
    );
    let start_wait = std::time::Instant::now();
    while threads(&s) + 2 > running && start_wait.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = threads(&s);
    assert!(
        left + 2 <= running,
        "{left} threads after closing 2 runs, {running} while they ran"
    );
    assert_eq!(s.request("POST", "/api/sessions", Some(&body)).status, 201);
}

#[test]
fn concurrent_creates_respect_the_limit() {
    let s = Server::start(&["--max-sessions", "2"]);
    let body = spiral_request(|v| v["points"] = json!(2000));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| s.request("POST", "/api/sessions", Some(&body)).status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&c| c == 201).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&c| c == 503).count(),
        4,
        "{statuses:?}"
    );
}

#[test]
fn other_sites_and_other_host_names_are_refused() {
    use std::io::{Read, Write};
    let s = Server::start(&[]);
    let body = spiral_request(|_| {});
    let foreign = s.raw(
        "POST",
        "/api/sessions",
        &[
            "Origin: http://evil.example",
            "Content-Type: application/json",
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(foreign.status, 403);
    assert!(foreign.error().contains("evil.example"));
    // A form post from another page cannot send JSON's content type.
    let form = s.raw(
        "POST",
        "/api/sessions",
        &["Content-Type: text/plain"],
        Some(body.as_bytes()),
    );
    assert_eq!(form.status, 415);
    // DNS rebinding: the browser sends the attacker's host name.
    let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
    write!(
        c,
        "GET /api/options HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    // The page's own origin is fine.
    let own = format!("Origin: http://{}", s.addr);
    let ok = s.raw(
        "POST",
        "/api/sessions",
        &[&own, "Content-Type: application/json"],
        Some(body.as_bytes()),
    );
    assert_eq!(ok.status, 201);
}

#[test]
fn speed_changes_without_a_restart_and_absurd_rates_and_models_are_refused() {
    let s = Server::start(&[]);
    let info = create(&s, &spiral_request(|v| v["steps_per_second"] = json!(30)));
    let id = info["id"].as_str().unwrap();
    start(&s, id);
    let path = format!("/api/sessions/{id}/control");
    let r = s.request(
        "POST",
        &path,
        Some(r#"{"action":"speed","steps_per_second":0}"#),
    );
    assert_eq!(r.json()["state"], "running");
    // At 30 steps/s, 400 steps take 13 s; unlimited, well under that.
    let fast = s.events_until(id, Duration::from_secs(8), |v| {
        v["step"].as_u64() > Some(400)
    });
    assert!(fast.is_some(), "the new speed did not apply");
    for rate in ["1e-300", "-1", "1e9"] {
        let body = format!(r#"{{"action":"speed","steps_per_second":{rate}}}"#);
        let r = s.request("POST", &path, Some(&body));
        assert_eq!(r.status, 400, "{rate}");
        assert!(r.error().contains("steps_per_second"), "{}", r.error());
        let rate: serde_json::Value = serde_json::from_str(rate).unwrap();
        let r = s.request(
            "POST",
            "/api/sessions",
            Some(&spiral_request(|v| v["steps_per_second"] = rate)),
        );
        assert_eq!(r.status, 400);
    }
    // A CSV of many columns, and a model over the parameter limit.
    let wide: String = (0..2000).map(|i| format!("c{i},")).collect::<String>() + "y\n";
    let row: String = (0..2000).map(|_| "0.5,").collect::<String>() + "1\n";
    let csv = format!("{wide}{row}{row}{row}");
    let r = s.request(
        "POST",
        "/api/sessions",
        Some(&spiral_request(|v| {
            v["dataset"] = json!("csv");
            v["csv"] = json!(csv);
        })),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("2000 feature columns"), "{}", r.error());
    let bad_csv = s.request(
        "POST",
        "/api/sessions",
        Some(&spiral_request(|v| {
            v["dataset"] = json!("csv");
            v["csv"] = json!("a,b\n1,x\n");
        })),
    );
    let e = bad_csv.error();
    assert!(e.contains("the uploaded CSV") && !e.contains("/tmp"), "{e}");
}

#[test]
fn ctrl_c_stops_the_server_cleanly_even_with_a_stream_open() {
    let mut s = Server::start(&[]);
    let id = create(&s, &spiral_request(|_| {}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    start(&s, &id);
    let addr = s.addr.clone();
    let watcher = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "GET /api/sessions/{id}/events HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        )
        .unwrap();
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink); // ends when the server closes the stream
        String::from_utf8_lossy(&sink)
            .matches("event: update")
            .count()
    });
    std::thread::sleep(Duration::from_millis(500));
    let pid = s.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    assert!(killed.unwrap().success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let events = watcher.join().unwrap();
    assert!(events > 0, "the stream was not open");
}

#[test]
fn a_bad_address_is_refused_in_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nabla"))
        .args(["serve", "--host", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--host not-an-address") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn csv_uploads_and_regression_runs_draw_what_they_can() {
    let s = Server::start(&[]);
    // Two features, three classes: decision regions.
    let mut csv = String::from("x,y,label\n");
    for i in 0..90 {
        let c = i % 3;
        csv += &format!(
            "{},{},{c}\n",
            c as f64 + (i as f64 * 0.37).sin() * 0.2,
            (i as f64 * 0.11).cos()
        );
    }
    let body = spiral_request(|v| {
        v["dataset"] = json!("csv");
        v["csv"] = json!(csv);
        v["test_fraction"] = json!(0.25);
    });
    let info = create(&s, &body);
    assert_eq!(info["features"], 2);
    assert_eq!(info["classes"], 3);
    assert!(info["command"]
        .as_str()
        .unwrap()
        .contains("--csv YOUR_FILE.csv --test-fraction 0.25"));
    let id = info["id"].as_str().unwrap();
    let snap = s
        .events_until(id, Duration::from_secs(10), |_| true)
        .unwrap();
    assert_eq!(snap["grid"]["n"], 60);

    // Sine regression: a fitted curve instead of regions, no accuracy.
    let body = spiral_request(|v| {
        v["dataset"] = json!("sine");
        v["loss"] = json!("huber");
    });
    let info = create(&s, &body);
    assert_eq!(info["task"], "regression");
    let id = info["id"].as_str().unwrap();
    s.request(
        "POST",
        &format!("/api/sessions/{id}/control"),
        Some(r#"{"action":"step"}"#),
    );
    let snap = s
        .events_until(id, Duration::from_secs(10), |v| v["step"] == 1)
        .unwrap();
    assert!(snap["grid"].is_null() && snap["test_accuracy"].is_null());
    assert_eq!(snap["curve"].as_array().unwrap().len(), 200);
    let g = s
        .request("POST", &format!("/api/sessions/{id}/inspect"), Some("{}"))
        .json();
    assert!(g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["group"] == "loss"));
}
