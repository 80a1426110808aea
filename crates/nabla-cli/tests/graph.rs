//! `nabla graph`: a model file's training-step graph as DOT (rendered by Graphviz when it is
//! installed; required with `NABLA_REQUIRE_GRAPHVIZ=1`) and as JSON.

use std::path::Path;
use std::process::Command;

fn nabla(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nabla"))
        .args(args)
        .env("NABLA_NO_DEBUG_WARNING", "1")
        .output()
        .unwrap()
}

fn train(dir: &Path) -> String {
    let out = nabla(&[
        "train",
        "--dataset",
        "moons",
        "--epochs",
        "1",
        "--hidden",
        "8,4",
        "--quiet",
        "--no-plots",
        "--overwrite",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("model.safetensors").display().to_string()
}

#[test]
fn graph_writes_dot_and_json_of_a_training_step() {
    let dir = std::env::temp_dir().join(format!("nabla-graph-test-{}", std::process::id()));
    let model = train(&dir);
    let json_path = dir.join("graph.json");
    let out = nabla(&[
        "graph",
        "--checkpoint",
        &model,
        "--batch",
        "5",
        "--format",
        "json",
        "--out",
        json_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("the first 5 training rows of moons"),
        "{line}"
    );
    let g: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(g["batch"], 5);
    let nodes = g["nodes"].as_array().unwrap();
    let input = nodes.iter().find(|n| n["label"] == "input").unwrap();
    assert_eq!(input["shape"], serde_json::json!([5, 2]));
    // Every op ran backward, so every op and parameter has its gradient.
    for n in nodes.iter().filter(|n| n["requires_grad"] == true) {
        assert!(!n["grad"].is_null(), "no gradient for {n}");
    }
    let h1 = nodes
        .iter()
        .find(|n| n["group"] == "layers.0" && !n["op"].is_null())
        .unwrap();
    assert_eq!(h1["saved_bytes"], 5 * 8 * 4);
    assert!(
        g["totals"]["saved_bytes"].as_u64().unwrap()
            > g["totals"]["no_grad_peak_bytes"].as_u64().unwrap()
    );

    let dot_path = dir.join("graph.dot");
    let out = nabla(&[
        "graph",
        "--checkpoint",
        &model,
        "--out",
        dot_path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let dot = std::fs::read_to_string(&dot_path).unwrap();
    assert!(dot.starts_with("digraph nabla {") && dot.contains("cluster_") && dot.contains("->"));
    match Command::new("dot").args(["-Tsvg"]).arg(&dot_path).output() {
        Ok(svg) => {
            assert!(
                svg.status.success(),
                "dot refused the file: {}",
                String::from_utf8_lossy(&svg.stderr)
            );
            assert!(String::from_utf8_lossy(&svg.stdout).contains("<svg"));
        }
        Err(_) if std::env::var_os("NABLA_REQUIRE_GRAPHVIZ").is_some() => {
            panic!("Graphviz `dot` not found: apt-get install graphviz")
        }
        Err(_) => {
            eprintln!("skipped rendering: Graphviz `dot` not found (apt-get install graphviz)")
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn graph_refuses_bad_input_in_one_line() {
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "graph",
                "--checkpoint",
                "/nonexistent/model.safetensors",
                "--out",
                "/tmp/x.dot",
            ],
            "/nonexistent/model.safetensors",
        ),
        (
            &[
                "graph",
                "--checkpoint",
                "m",
                "--batch",
                "0",
                "--out",
                "/tmp/x.dot",
            ],
            "--batch 0",
        ),
        (
            &[
                "graph",
                "--checkpoint",
                "m",
                "--format",
                "svg",
                "--out",
                "/tmp/x",
            ],
            "svg",
        ),
    ];
    for (args, named) in cases {
        let out = nabla(args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(named), "{err}");
    }
}
