//! MNIST-format directories: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each plain or with `.gz`.

use std::path::{Path, PathBuf};

use super::idx::read_idx;
use super::Classification;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Where `apt-get install dataset-fashion-mnist` puts Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The class names of Fashion-MNIST, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which half of an MNIST-format data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training files (`train-*`).
    Train,
    /// The test files (`t10k-*`).
    Test,
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let plain = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        Ok(gz)
    } else if plain.is_file() {
        Ok(plain)
    } else {
        Err(Error::file(
            &gz,
            format!(
                "not found (nor {}); an MNIST-format directory holds train-images-idx3-ubyte[.gz], \
                 train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and \
                 t10k-labels-idx1-ubyte[.gz]; for Fashion-MNIST run \
                 `apt-get install dataset-fashion-mnist` (installs into {FASHION_MNIST_DIR})",
                plain.display()
            ),
        ))
    }
}

/// The `[images, labels]` files of one split of an MNIST-format directory (`.gz` preferred
/// over plain); an error naming what is missing.
pub fn mnist_files(dir: impl AsRef<Path>, split: Split) -> Result<[PathBuf; 2]> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let dir = dir.as_ref();
    Ok([
        find(dir, &format!("{prefix}-images-idx3-ubyte"))?,
        find(dir, &format!("{prefix}-labels-idx1-ubyte"))?,
    ])
}

/// Loads one split of an MNIST-format directory: pixels scaled to [0, 1] as `[n, rows·cols]`,
/// labels as classes. Checks that image and label counts agree.
pub fn load_mnist_dir(dir: impl AsRef<Path>, split: Split) -> Result<Classification> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            format!(
                "no such directory; for Fashion-MNIST run `apt-get install dataset-fashion-mnist` \
                 (installs into {FASHION_MNIST_DIR}), or pass --data-dir with any MNIST-format \
                 directory"
            ),
        ));
    }
    let [img_path, lbl_path] = mnist_files(dir, split)?;
    let images = read_idx(&img_path)?;
    let labels = read_idx(&lbl_path)?;
    if images.dims.len() != 3 {
        return Err(Error::file(
            &img_path,
            format!(
                "images must have 3 dimensions [n, rows, cols], found {:?}",
                images.dims
            ),
        ));
    }
    if labels.dims.len() != 1 {
        return Err(Error::file(
            &lbl_path,
            format!("labels must have 1 dimension [n], found {:?}", labels.dims),
        ));
    }
    let n = images.dims[0];
    if labels.dims[0] != n {
        return Err(Error::file(
            &lbl_path,
            format!(
                "{} labels but {} has {n} images",
                labels.dims[0],
                img_path.display()
            ),
        ));
    }
    let d = images.dims[1] * images.dims[2];
    let x: Vec<f32> = images.data.iter().map(|&p| p as f32 / 255.0).collect();
    let labels: Vec<usize> = labels.data.iter().map(|&l| l as usize).collect();
    let classes = labels.iter().max().map_or(0, |m| m + 1).max(2);
    Ok(Classification {
        x: Tensor::from_vec(x, &[n, d])?,
        labels,
        classes,
    })
}
