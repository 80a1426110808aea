//! Language models through the CLI: `nabla train --dataset text` (a GPT from --arch gpt-tiny
//! or a model spec), resume, info, eval in nats and bits per character, `nabla generate` with
//! and without the key/value cache, and the errors a user meets (each a test first).

use std::path::Path;

mod common;
#[path = "../../nabla/tests/pyenv/mod.rs"]
mod pyenv;
use common::{fails_with, nabla, ok, text, tmpdir};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small English text, repeated: learnable in a few dozen steps.
fn corpus(dir: &Path) -> std::path::PathBuf {
    let lines = [
        "It is a truth universally acknowledged, that a single man in possession\n",
        "of a good fortune, must be in want of a wife.\n",
        "However little known the feelings or views of such a man may be on his\n",
        "first entering a neighbourhood, this truth is so well fixed in the minds\n",
    ];
    let path = dir.join("austen.txt");
    std::fs::write(&path, lines.concat().repeat(25)).unwrap();
    path
}

/// A two-block GPT of width 32 over a context of 32, as a model spec (the input is left out:
/// the data's windows).
fn small_gpt(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("gpt.json");
    let spec = r#"{"layers": [{"type": "gpt", "vocab": 40, "context": 32, "width": 32,
        "depth": 2, "heads": 4, "tied": true}]}"#;
    std::fs::write(&path, spec).unwrap();
    path
}

#[test]
fn a_gpt_trains_on_text_resumes_evaluates_and_generates() {
    let dir = tmpdir("text-gpt");
    let corpus = corpus(&dir);
    let vocab = {
        let mut c: Vec<char> = std::fs::read_to_string(&corpus).unwrap().chars().collect();
        c.sort_unstable();
        c.dedup();
        c.len()
    };
    let spec = small_gpt(&dir);
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("\"vocab\": 40", &format!("\"vocab\": {vocab}")),
    )
    .unwrap();
    let run = dir.join("run");
    let train = |steps: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--dataset",
            "text",
            "--text",
            s(&corpus),
            "--context",
            "32",
            "--model",
            s(&spec),
            "--max-steps",
            steps,
            "--eval-every",
            "40",
            "--checkpoint-every",
            "40",
            "--lr",
            "0.01",
            "--warmup",
            "10",
            "--out",
            s(&run),
        ];
        args.extend(extra);
        nabla(&args)
    };
    let out = ok(&train("80", &[]));
    assert!(
        out.contains("step 40/80") && out.contains("bits/char"),
        "{out}"
    );
    assert!(out.contains("validation loss"), "{out}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}"); // header, steps 40 and 80
    assert!(run.join("loss.png").is_file());

    // resume to more steps: one more row
    let out = ok(&nabla(&[
        "train",
        "--resume",
        s(&run),
        "--max-steps",
        "120",
    ]));
    assert!(out.contains("step 120/120"), "{out}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let val: Vec<f64> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap().parse().unwrap())
        .collect();
    assert_eq!(val.len(), 3, "{metrics}");
    // from about ln 29 ≈ 3.4 nats/char at the start to well under 2 after 120 steps
    assert!(
        val[2] < 2.0 && val[2] < val[0],
        "validation losses {val:?} at steps 40, 80, 120"
    );

    let model = run.join("model.safetensors");
    let info = ok(&nabla(&["info", "--checkpoint", s(&model)]));
    assert!(
        info.contains("Gpt(vocab") && info.contains("[1, 32, "),
        "{info}"
    );
    assert!(
        info.contains("a language model") && info.contains("nabla generate"),
        "{info}"
    );
    assert!(
        info.contains("--format torch") && info.contains("--format onnx"),
        "{info}"
    );

    let eval = ok(&nabla(&["eval", "--checkpoint", s(&model)]));
    assert!(
        eval.contains("nats/char") && eval.contains("bits/char"),
        "{eval}"
    );
    assert!(eval.contains("next-character accuracy"), "{eval}");

    // generation: streamed text that continues the prompt, with its speed on stderr
    let gen = nabla(&[
        "generate",
        "--checkpoint",
        s(&model),
        "--prompt",
        "It is a truth",
        "--tokens",
        "100",
        "--temperature",
        "0",
    ]);
    let sample = ok(&gen);
    assert!(sample.starts_with("It is a truth"), "{sample}");
    assert_eq!(sample.trim_end_matches('\n').chars().count(), 13 + 100);
    let err = text(&gen.stderr);
    assert!(
        err.contains("characters/s") && err.contains("with the key/value cache"),
        "{err}"
    );
    // greedy decoding without the cache gives the same text, past the context too (both
    // restart from its last half)
    let plain = ok(&nabla(&[
        "generate",
        "--checkpoint",
        s(&model),
        "--prompt",
        "It is a truth",
        "--tokens",
        "100",
        "--temperature",
        "0",
        "--no-cache",
        "--quiet",
    ]));
    assert_eq!(plain, sample);

    // the failures a user meets, one line each
    fails_with(
        &nabla(&["generate", "--checkpoint", s(&model), "--prompt", "Jazz Q"]),
        "3 character(s) not in the model's vocabulary: 'J', 'z', 'Q'",
    );
    fails_with(
        &nabla(&["generate", "--checkpoint", s(&model), "--temperature", "-1"]),
        "temperature -1",
    );
    fails_with(
        &nabla(&["generate", "--checkpoint", s(&model), "--top-k", "0"]),
        "top-k 0 keeps no token",
    );
    // a prompt longer than the context (32) is continued from its last 32 characters, and
    // the statistics say so
    let long = "It is a truth universally acknowledged, that a single man";
    let out = nabla(&[
        "generate",
        "--checkpoint",
        s(&model),
        "--prompt",
        long,
        "--tokens",
        "5",
    ]);
    assert!(ok(&out).starts_with(long));
    let err = text(&out.stderr);
    assert!(
        err.contains("prompt's 57 characters are more than the model's context of 32"),
        "{err}"
    );
    // a rejected option prints nothing on stdout, not the prompt before the error
    let bad = nabla(&[
        "generate",
        "--checkpoint",
        s(&model),
        "--prompt",
        "It is",
        "--temperature",
        "nan",
    ]);
    fails_with(&bad, "temperature NaN");
    assert!(
        bad.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&bad.stdout)
    );
    // ONNX export: the graph takes int64 ids of any length up to the context; ONNX Runtime
    // (where installed) gives the model file's logits
    let onnx = dir.join("m.onnx");
    let said = export(&model, "onnx", &onnx);
    assert!(
        said.contains("int64 token ids") && said.contains("at most 32 positions"),
        "{said}"
    );
    assert!(std::fs::metadata(&onnx).unwrap().len() > 4 * 25_000); // the 27,424 weights
    if pyenv::onnx_available() {
        onnx_matches_nabla(&dir, &model, &onnx, vocab);
    }
    // PyTorch export: the state dict and the Python source of the GPT
    let torch = dir.join("torch.safetensors");
    let said = export(&model, "torch", &torch);
    assert!(
        said.contains("Gpt(") && said.contains("token ids"),
        "{said}"
    );
    let md = nabla::io::read_tensor_file(&torch).unwrap().metadata;
    assert!(
        md["torch_source"].contains("class Gpt(nn.Module)"),
        "{md:?}"
    );
    // ... which `nabla import` turns back into a language model that samples the same text
    let back = dir.join("back.safetensors");
    let state = ["--state-dict", s(&torch), "--out", s(&back)];
    ok(&nabla(
        &[&["import", "--format", "torch"][..], &state].concat(),
    ));
    let sample = |m: &Path| {
        ok(&nabla(&[
            "generate",
            "--checkpoint",
            s(m),
            "--tokens",
            "40",
            "--quiet",
        ]))
    };
    assert_eq!(sample(&back), sample(&model));
}

/// `nabla export --format FORMAT` of `model` to `out`: what it printed (it must succeed).
fn export(model: &Path, format: &str, out: &Path) -> String {
    ok(&nabla(&[
        "export",
        "--checkpoint",
        s(model),
        "--format",
        format,
        "--out",
        s(out),
    ]))
}

/// ONNX Runtime running the exported `onnx` gives the logits and probabilities the model file
/// gives in nabla, for 20 of the 32 positions (`tests/python/check_onnx.py`).
fn onnx_matches_nabla(dir: &Path, model: &Path, onnx: &Path, vocab: usize) {
    use nabla::nn::Module;
    let net = nabla::io::load_model(model).unwrap().0;
    let ids: Vec<f32> = (0..40).map(|i| ((i * 7 + 3) % vocab) as f32).collect();
    let x = nabla::Tensor::from_vec(ids, &[2, 20]).unwrap();
    let logits = nabla::no_grad(|| net.forward(&x)).unwrap();
    let tensors = vec![
        ("input".to_string(), x),
        ("probabilities".to_string(), logits.softmax(2).unwrap()),
        ("logits".to_string(), logits),
    ];
    let expected = dir.join("expected.safetensors");
    let md = std::collections::BTreeMap::new();
    nabla::io::write_tensor_file(&expected, &tensors, &md).unwrap();
    let tol = Path::new("1e-5");
    eprint!(
        "{}",
        pyenv::run("check_onnx.py", &[Path::new("gpt"), onnx, &expected, tol])
    );
}

/// `--dropout` on gpt-tiny: the model file keeps it (`nabla info` shows it), and generation
/// drops nothing: without the key/value cache (a full forward pass per character, which
/// would drop in training mode) it picks the characters the cached path picks (greedy, within
/// the first context: the two paths' logits agree to rounding, not bit for bit).
#[test]
fn gpt_tiny_takes_dropout() {
    let dir = tmpdir("text-dropout");
    let corpus = corpus(&dir);
    let run = dir.join("run");
    ok(&nabla(&[
        "train",
        "--text",
        s(&corpus),
        "--arch",
        "gpt-tiny",
        "--dropout",
        "0.2",
        "--context",
        "16",
        "--max-steps",
        "40",
        "--lr",
        "0.01",
        "--quiet",
        "--no-plots",
        "--out",
        s(&run),
    ]));
    let model = run.join("model.safetensors");
    let info = ok(&nabla(&["info", "--checkpoint", s(&model)]));
    assert!(info.contains("dropout 0.2"), "{info}");
    let sample = |cache: bool| {
        let mut args = vec![
            "generate",
            "--checkpoint",
            s(&model),
            "--prompt",
            "It is",
            "--tokens",
            "10",
            "--temperature",
            "0",
        ];
        if !cache {
            args.push("--no-cache");
        }
        ok(&nabla(&args))
    };
    let first = sample(true);
    assert!(first.starts_with("It is"), "{first}");
    assert_eq!(first, sample(false));
}

#[test]
fn text_data_errors_are_one_line_naming_the_problem() {
    let dir = tmpdir("text-errors");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let args = |file: &Path| {
        vec![
            "train".to_string(),
            "--text".into(),
            s(file).into(),
            "--arch".into(),
            "gpt-tiny".into(),
            "--out".into(),
            s(&dir.join("run")).into(),
        ]
    };
    let run = |v: Vec<String>| nabla(&v.iter().map(String::as_str).collect::<Vec<_>>());
    fails_with(&run(args(&empty)), "empty.txt: the text file is empty");
    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"na\xefve caf\xe9 ".repeat(100)).unwrap();
    fails_with(
        &run(args(&latin1)),
        "latin1.txt: not UTF-8 text (invalid bytes at offset 2)",
    );
    let short = dir.join("short.txt");
    std::fs::write(&short, "too short for a window").unwrap();
    fails_with(&run(args(&short)), "shorter than one window");
    fails_with(&run(args(&dir.join("missing.txt"))), "missing.txt");
    // a language model needs text, and text needs a language model
    fails_with(
        &nabla(&["train", "--arch", "gpt-tiny", "--out", s(&dir.join("r2"))]),
        "--arch gpt-tiny is a language model",
    );
    let corpus = corpus(&dir);
    fails_with(
        &nabla(&["train", "--text", s(&corpus), "--out", s(&dir.join("r3"))]),
        "needs a language model",
    );
    fails_with(
        &nabla(&[
            "train",
            "--text",
            s(&corpus),
            "--context",
            "2000",
            "--arch",
            "gpt-tiny",
            "--out",
            s(&dir.join("r4")),
        ]),
        "shorter than one window of 2000",
    );
    fails_with(
        &nabla(&[
            "train",
            "--dataset",
            "spiral",
            "--context",
            "8",
            "--out",
            s(&dir.join("r5")),
        ]),
        "--context applies only to --dataset text",
    );
    fails_with(
        &nabla(&[
            "train",
            "--text",
            s(&corpus),
            "--arch",
            "gpt-tiny",
            "--dropout",
            "1.5",
            "--out",
            s(&dir.join("r7")),
        ]),
        "--dropout 1.5 is not in [0, 1)",
    );
    // a spec whose vocabulary is not the text's
    let spec = small_gpt(&dir);
    fails_with(
        &nabla(&[
            "train",
            "--text",
            s(&corpus),
            "--context",
            "32",
            "--model",
            s(&spec),
            "--out",
            s(&dir.join("r6")),
        ]),
        "the model's output is [N, 32, 40]",
    );
    // a model that is not a language model cannot generate
    let mlp = dir.join("mlp");
    ok(&nabla(&[
        "train",
        "--epochs",
        "1",
        "--no-plots",
        "--quiet",
        "--out",
        s(&mlp),
    ]));
    fails_with(
        &nabla(&[
            "generate",
            "--checkpoint",
            s(&mlp.join("model.safetensors")),
        ]),
        "not a language model",
    );
}

/// The real corpus (tools/get-shakespeare; CI installs it): 60 steps of gpt-tiny take the
/// validation loss from ln 84 ≈ 4.4 to under 3.2 nats/char.
#[test]
fn gpt_tiny_learns_on_the_shakespeare_corpus() {
    let path = std::env::var("NABLA_TEXT_CORPUS")
        .unwrap_or_else(|_| "/usr/share/datasets/shakespeare/shakespeare.txt".into());
    if !Path::new(&path).is_file() {
        assert!(
            std::env::var_os("NABLA_REQUIRE_TEXT").is_none(),
            "{path} is missing (tools/get-shakespeare writes it)"
        );
        eprintln!("skipped: {path} is missing (tools/get-shakespeare writes it)");
        return;
    }
    let dir = tmpdir("text-shakespeare");
    let out = ok(&nabla(&[
        "train",
        "--text",
        &path,
        "--arch",
        "gpt-tiny",
        "--max-steps",
        "60",
        "--warmup",
        "10",
        "--no-plots",
        "--out",
        s(&dir.join("run")),
    ]));
    assert!(out.contains("84 in the vocabulary"), "{out}");
    let metrics = std::fs::read_to_string(dir.join("run/metrics.csv")).unwrap();
    let last: Vec<&str> = metrics.lines().last().unwrap().split(',').collect();
    let val_loss: f64 = last[5].parse().unwrap();
    assert!(val_loss < 3.2, "validation loss {val_loss} after 60 steps");
}
