//! Reading and writing safetensors files, and the atomic write underneath.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::tensor::{Float, Tensor};

/// The contents of a safetensors file: f32 and f64 tensors (other dtypes are reported by name
/// and dtype but not decoded) and the string metadata.
#[derive(Debug, Clone, Default)]
pub struct TensorFile {
    /// Decoded f32 tensors.
    pub f32: BTreeMap<String, Tensor<f32>>,
    /// Decoded f64 tensors.
    pub f64: BTreeMap<String, Tensor<f64>>,
    /// Tensors of other dtypes: name → (dtype, shape).
    pub other: BTreeMap<String, (String, Vec<usize>)>,
    /// The `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// Every tensor name with its dtype and shape.
    pub fn describe(&self) -> BTreeMap<String, (String, Vec<usize>)> {
        let mut all = self.other.clone();
        for (n, t) in &self.f32 {
            all.insert(n.clone(), ("F32".into(), t.shape().to_vec()));
        }
        for (n, t) in &self.f64 {
            all.insert(n.clone(), ("F64".into(), t.shape().to_vec()));
        }
        all
    }

    /// The tensor `name` as `T`, if present with that dtype.
    pub fn get<T: Float>(&self, name: &str) -> Result<Option<Tensor<T>>> {
        match T::DTYPE {
            "f32" => self.f32.get(name).map(|t| t.cast::<T>()).transpose(),
            _ => self.f64.get(name).map(|t| t.cast::<T>()).transpose(),
        }
    }
}

fn dtype_of<T: Float>() -> Dtype {
    if T::DTYPE == "f32" {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

fn to_le_bytes<T: Float>(t: &Tensor<T>) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.nbytes());
    t.for_each(|v| {
        if T::DTYPE == "f32" {
            out.extend_from_slice(&(v.to_f64() as f32).to_le_bytes());
        } else {
            out.extend_from_slice(&v.to_f64().to_le_bytes());
        }
    });
    out
}

/// Writes `bytes` to `path` so that a crash at any moment leaves either the old file or the
/// new one, never a torn file: write a temporary file in the same directory, fsync it, rename
/// it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |m: String| Error::file(path, m);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| err("not a file path".into()))?
        .to_string_lossy()
        .to_string();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Persist the rename itself; not every file system supports syncing a directory.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err(format!("cannot write: {e}"))
    })
}

/// Writes named tensors and metadata as a safetensors file, atomically.
pub fn write_tensor_file<T: Float>(
    path: &Path,
    tensors: &[(String, Tensor<T>)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    if let Some((dup, _)) = tensors.iter().find(|(n, _)| !seen.insert(n.as_str())) {
        return Err(Error::file(
            path,
            format!("tensor name {dup} appears twice"),
        ));
    }
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), to_le_bytes(t), t.shape().to_vec()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| {
            TensorView::new(dtype_of::<T>(), s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::file(path, format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let buf = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::file(path, format!("cannot encode safetensors: {e}")))?;
    write_atomic(path, &buf)
}

/// Reads a safetensors file. Errors name the file and what is wrong with it.
pub fn read_tensor_file(path: &Path) -> Result<TensorFile> {
    let buf = fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    TensorFile::from_bytes(&buf).map_err(|m| match what_else(path, &buf) {
        Some(other) => Error::file(path, other),
        None => Error::file(path, m),
    })
}

/// What a file that is not safetensors is, when it is something a user of nabla meets, and
/// what to run instead.
fn what_else(path: &Path, buf: &[u8]) -> Option<String> {
    let onnx_name = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if buf.starts_with(b"PK\x03\x04") {
        return Some(
            "a zip archive: a PyTorch `torch.save` file, not safetensors; in Python save the \
             state dict with safetensors.torch.save_file(model.state_dict(), 'model.safetensors'), \
             then `nabla import --state-dict model.safetensors`"
                .into(),
        );
    }
    if buf.first() == Some(&0x80) && buf.get(1).is_some_and(|&v| (2..=5).contains(&v)) {
        return Some(
            "a Python pickle (an old-style `torch.save` file), not safetensors; save the state \
             dict with safetensors.torch.save_file, then `nabla import`"
                .into(),
        );
    }
    // An ONNX ModelProto starts with field 1 (ir_version, varint): byte 0x08.
    if onnx_name || (buf.first() == Some(&0x08) && buf.windows(5).any(|w| w == b"nabla")) {
        return Some(
            "an ONNX model (as `nabla export --format onnx` writes), not safetensors: run it \
             with ONNX Runtime; nabla reads its own model files (the --checkpoint it was \
             exported from)"
                .into(),
        );
    }
    None
}

impl TensorFile {
    /// Parses the bytes of a safetensors file. The header, offsets (in bounds, contiguous, not
    /// overlapping) and dtypes are validated before any tensor is decoded.
    pub fn from_bytes(buf: &[u8]) -> std::result::Result<TensorFile, String> {
        decode(buf)
    }
}

fn decode(buf: &[u8]) -> std::result::Result<TensorFile, String> {
    let bad = |e: safetensors::SafeTensorError| format!("not a valid safetensors file: {e}");
    let st = SafeTensors::deserialize(buf).map_err(bad)?;
    let (_, meta) = SafeTensors::read_metadata(buf).map_err(bad)?;
    let mut out = TensorFile {
        metadata: meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ..Default::default()
    };
    for (name, view) in st.iter() {
        let shape = view.shape().to_vec();
        let data = view.data();
        match view.dtype() {
            Dtype::F32 => {
                let v = data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                out.f32.insert(
                    name.to_string(),
                    Tensor::from_vec(v, &shape).map_err(|e| format!("tensor {name}: {e}"))?,
                );
            }
            Dtype::F64 => {
                let v = data
                    .chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        f64::from_le_bytes(b)
                    })
                    .collect();
                out.f64.insert(
                    name.to_string(),
                    Tensor::from_vec(v, &shape).map_err(|e| format!("tensor {name}: {e}"))?,
                );
            }
            other => {
                out.other
                    .insert(name.to_string(), (format!("{other:?}"), shape));
            }
        }
    }
    Ok(out)
}
