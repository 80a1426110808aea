//! Runs every file of the malformed corpus (tests/corpus, written by make_corpus.py) through
//! the library's loaders and through the CLI: each must give an error naming the file — a
//! non-zero exit with exactly one line on stderr — and never a panic.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{fails_with, nabla, tmpdir, Scratch};

use nabla::data::csv::{read_csv, Header, TargetColumn};
use nabla::data::idx::read_idx;
use nabla::io::read_tensor_file;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn fails_naming(out: &Output, file: &Path) {
    fails_with(out, &file.file_name().unwrap().to_string_lossy());
}

/// A small trained model for `predict`: its directory (removed when dropped) and file.
fn model() -> (Scratch, PathBuf) {
    let dir = tmpdir("corpus-model");
    let out = nabla(&[
        "train",
        "--epochs",
        "1",
        "--no-plots",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let file = dir.join("model.safetensors");
    (dir, file)
}

#[test]
fn the_corpus_has_at_least_twenty_cases() {
    let n: usize = ["idx", "csv", "safetensors"]
        .iter()
        .map(|k| corpus(k).len())
        .sum();
    assert!(n >= 20, "{n} cases");
}

#[test]
fn malformed_idx_files_are_rejected() {
    let (_dir, model) = model();
    for f in corpus("idx") {
        let e = read_idx(&f).expect_err(&format!("{} was accepted", f.display()));
        assert!(e.to_string().contains(&f.display().to_string()), "{e}");
        fails_naming(
            &nabla(&[
                "predict",
                "--checkpoint",
                model.to_str().unwrap(),
                "--input",
                f.to_str().unwrap(),
            ]),
            &f,
        );
    }
}

#[test]
fn malformed_csv_files_are_rejected() {
    let out_dir = tmpdir("corpus-csv");
    for f in corpus("csv") {
        let lib =
            read_csv(&f, &TargetColumn::Last, Header::Auto).and_then(|t| t.into_classification(&f));
        assert!(lib.is_err(), "{} was accepted", f.display());
        let out = nabla(&[
            "train",
            "--csv",
            f.to_str().unwrap(),
            "--epochs",
            "1",
            "--no-plots",
            "--quiet",
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        fails_naming(&out, &f);
    }
}

#[test]
fn malformed_checkpoints_are_rejected() {
    for f in corpus("safetensors") {
        // Files the format parser accepts must still be refused as models.
        if read_tensor_file(&f).is_ok() {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                [
                    "wrong-dtype",
                    "wrong-shape",
                    "missing-tensor",
                    "not-a-model"
                ]
                .iter()
                .any(|k| name.contains(k)),
                "{name} parsed as a valid safetensors file"
            );
        }
        fails_naming(&nabla(&["eval", "--checkpoint", f.to_str().unwrap()]), &f);
        if read_tensor_file(&f).is_err() {
            fails_naming(&nabla(&["info", "--checkpoint", f.to_str().unwrap()]), &f);
        }
    }
}
