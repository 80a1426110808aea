//! The IDX format of MNIST-style data sets (MNIST, Fashion-MNIST, KMNIST), plain or gzipped.
//!
//! Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
//! each dimension as a big-endian u32, then the elements row-major. Files are treated as
//! untrusted: the header is checked against the real length before anything it claims is
//! allocated.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::{Error, Result};

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimensions, e.g. `[60000, 28, 28]` for images or `[60000]` for labels.
    pub dims: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<u8>,
}

/// The most elements one IDX file may claim (far above any MNIST-style set; 2^34 bytes).
const MAX_ELEMENTS: u64 = 1 << 34;

fn describe_start(bytes: &[u8]) -> Option<&'static str> {
    let text = bytes
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(24);
    let head: Vec<u8> = text.map(|b| b.to_ascii_lowercase()).collect();
    if head.starts_with(b"<!doctype") || head.starts_with(b"<html") || head.starts_with(b"<?xml") {
        Some("it is an HTML/XML page, not IDX data (a failed download saved under the data file's name?)")
    } else if head.starts_with(b"version https://git-lfs") {
        Some("it is a Git LFS pointer, not the data (run `git lfs pull`)")
    } else {
        None
    }
}

/// Reads an IDX file of unsigned bytes, gunzipping it first if it starts with the gzip magic
/// (whatever its name says).
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let raw = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    idx_from_bytes(&raw).map_err(|m| Error::file(path, m))
}

/// Parses the bytes of an IDX file, plain or gzipped. A gzipped file is decompressed only as
/// far as its header claims (plus one byte, to detect trailing data), so a small file cannot
/// make the reader allocate more than the header says, and the header is checked first.
pub fn idx_from_bytes(raw: &[u8]) -> std::result::Result<IdxArray, String> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return parse_idx(raw);
    }
    let corrupt = |e: std::io::Error| format!("gzip data is corrupt or truncated: {e}");
    let mut gz = GzDecoder::new(raw);
    let mut head = Vec::new();
    (&mut gz).take(4).read_to_end(&mut head).map_err(corrupt)?;
    if head.len() == 4 && head[0] == 0 && head[1] == 0 {
        let ndims = head[3] as u64;
        (&mut gz)
            .take(4 * ndims)
            .read_to_end(&mut head)
            .map_err(corrupt)?;
        if head.len() as u64 == 4 + 4 * ndims {
            let claimed = head[4..]
                .chunks(4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64)
                .try_fold(1u64, |acc, d| acc.checked_mul(d))
                .filter(|&n| n <= MAX_ELEMENTS)
                .ok_or_else(|| "the header claims an absurd number of elements".to_string())?;
            (&mut gz)
                .take(claimed + 1)
                .read_to_end(&mut head)
                .map_err(corrupt)?;
        }
    }
    parse_idx(&head)
}

/// Parses IDX bytes (already decompressed). The error is a message without the file name.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if let Some(what) = describe_start(bytes) {
        return Err(what.to_string());
    }
    if bytes.len() < 4 {
        return Err(format!(
            "{} bytes is too short for an IDX header (4 bytes of magic)",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "bad magic {:02x} {:02x} {:02x} {:02x}: an IDX file starts with 00 00",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "element type 0x{:02x} is not supported (only 0x08, unsigned bytes, as in MNIST)",
            bytes[2]
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err("IDX header declares 0 dimensions".into());
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(format!(
            "truncated header: {ndims} dimensions need {header} bytes, the file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let claimed = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("dimensions {dims:?} claim an absurd number of elements"))?;
    let have = (bytes.len() - header) as u64;
    if have != claimed {
        return Err(format!(
            "dimensions {dims:?} need {claimed} data bytes, the file has {have} ({})",
            if have < claimed {
                "truncated"
            } else {
                "trailing bytes"
            }
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}
