//! Text for character-level language models: a [`Vocab`] of the characters a corpus uses,
//! and [`TextData`], windows of a token stream whose targets are the next characters.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The most characters a vocabulary may hold.
pub const MAX_VOCAB: usize = 4096;

/// The characters of a corpus, sorted by code point; a character's id is its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    chars: Vec<char>,
}

impl Vocab {
    /// The distinct characters of `text`. An error when there are none or more than
    /// [`MAX_VOCAB`].
    ///
    /// ```
    /// use nabla::data::text::Vocab;
    /// let v = Vocab::from_text("hello").unwrap();
    /// assert_eq!(v.len(), 4);
    /// assert_eq!(v.encode("olleh").unwrap(), [3, 2, 2, 0, 1]);
    /// assert_eq!(v.decode(&[0, 3]), "eo");
    /// assert!(v.encode("help").is_err());
    /// ```
    pub fn from_text(text: &str) -> Result<Self> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::from_chars(chars)
    }

    /// A vocabulary of these characters, sorted by code point, each once.
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() {
            return Err(Error::arg("vocabulary", "the text has no characters"));
        }
        if chars.len() > MAX_VOCAB {
            return Err(Error::arg(
                "vocabulary",
                format!(
                    "the text uses {} distinct characters, over the limit of {MAX_VOCAB}",
                    chars.len()
                ),
            ));
        }
        if chars.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::arg(
                "vocabulary",
                "the characters must be sorted by code point, each once",
            ));
        }
        Ok(Vocab { chars })
    }

    /// From the one-character strings a model file stores ([`Vocab::to_strings`]).
    pub fn from_strings(items: &[String]) -> Result<Self> {
        let chars = items
            .iter()
            .map(|s| {
                let mut it = s.chars();
                match (it.next(), it.next()) {
                    (Some(c), None) => Ok(c),
                    _ => Err(Error::arg(
                        "vocabulary",
                        format!("entry {s:?} is not one character"),
                    )),
                }
            })
            .collect::<Result<Vec<char>>>()?;
        Self::from_chars(chars)
    }

    /// Each character as a string (what a model file stores).
    pub fn to_strings(&self) -> Vec<String> {
        self.chars.iter().map(|c| c.to_string()).collect()
    }

    /// Characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Never true: a vocabulary has at least one character.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The ids of `text`'s characters; an error naming those outside the vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut missing: Vec<char> = Vec::new();
        let ids: Vec<u32> = text
            .chars()
            .filter_map(|c| match self.chars.binary_search(&c) {
                Ok(i) => Some(i as u32),
                Err(_) => {
                    if !missing.contains(&c) {
                        missing.push(c);
                    }
                    None
                }
            })
            .collect();
        if missing.is_empty() {
            Ok(ids)
        } else {
            Err(outside(&missing))
        }
    }

    /// The text of these ids (ids outside the vocabulary are skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .filter_map(|&i| self.chars.get(i as usize))
            .collect()
    }
}

fn outside(missing: &[char]) -> Error {
    let shown: Vec<String> = missing.iter().take(10).map(|c| format!("{c:?}")).collect();
    Error::arg(
        "vocabulary",
        format!(
            "{} character(s) not in the model's vocabulary: {}{}",
            missing.len(),
            shown.join(", "),
            if missing.len() > 10 { ", …" } else { "" }
        ),
    )
}

/// Reads a UTF-8 text file; an error naming the file when it cannot be read, is not UTF-8
/// (with the byte offset) or is empty.
pub fn read_text(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::file(
            path,
            format!(
                "not UTF-8 text (invalid bytes at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    if text.is_empty() {
        return Err(Error::file(path, "the text file is empty"));
    }
    Ok(text)
}

/// Windows of `context` tokens cut from a token stream, each with its targets (the next
/// token at every position). Window `i` starts at `i·stride`: a stride of 1 gives every window
/// (training, shuffled by the trainer), a stride of `context` the non-overlapping ones that
/// cover the stream once (evaluation).
#[derive(Debug, Clone)]
pub struct TextData {
    /// The token stream.
    pub tokens: Arc<Vec<u32>>,
    /// Positions per window.
    pub context: usize,
    /// Tokens between window starts.
    pub stride: usize,
    /// Size of the vocabulary.
    pub vocab: usize,
    /// The stream as `[1, len]` values (what [`TaskData::x`](super::TaskData::x) shows).
    pub(crate) stream: Tensor<f32>,
}

impl TextData {
    /// Windows of `tokens`; an error when `context` or `stride` is 0 or a token is not below
    /// `vocab`.
    pub fn new(tokens: Vec<u32>, vocab: usize, context: usize, stride: usize) -> Result<Self> {
        if context == 0 || stride == 0 {
            return Err(Error::arg(
                "text data",
                format!("context {context} and stride {stride} must be > 0"),
            ));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::arg(
                "text data",
                format!("token {t} is outside the vocabulary of {vocab}"),
            ));
        }
        let stream = Tensor::from_vec(
            tokens.iter().map(|&t| t as f32).collect(),
            &[1, tokens.len()],
        )?;
        Ok(TextData {
            tokens: Arc::new(tokens),
            context,
            stride,
            vocab,
            stream,
        })
    }

    /// Windows (each needs `context + 1` tokens: its inputs and the last target).
    pub fn len(&self) -> usize {
        match self.tokens.len().checked_sub(self.context + 1) {
            Some(rest) => rest / self.stride + 1,
            None => 0,
        }
    }

    /// True without a whole window.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Target tokens (positions) per window.
    pub fn positions(&self) -> usize {
        self.context
    }

    /// The windows `idx` as token ids `[idx.len(), context]`.
    pub fn inputs(&self, idx: &[usize]) -> Result<Tensor<f32>> {
        let mut v = Vec::with_capacity(idx.len() * self.context);
        for &i in idx {
            let s = i * self.stride;
            v.extend(self.tokens[s..s + self.context].iter().map(|&t| t as f32));
        }
        Tensor::from_vec(v, &[idx.len(), self.context])
    }

    /// The targets of the windows `idx`, window after window (`idx.len()·context` ids).
    pub fn targets(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter()
            .flat_map(|&i| {
                let s = i * self.stride + 1;
                self.tokens[s..s + self.context].iter().map(|&t| t as usize)
            })
            .collect()
    }

    /// The same text with at most `max_windows` windows, spread evenly over it (the stride
    /// grows; it is never below the context, so windows do not overlap): a quicker
    /// evaluation during training.
    pub fn spread(&self, max_windows: usize) -> TextData {
        let span = self.tokens.len().saturating_sub(self.context + 1);
        let stride = self
            .stride
            .max(self.context)
            .max(span.div_ceil(max_windows.saturating_sub(1).max(1)));
        TextData {
            stride,
            ..self.clone()
        }
    }

    /// The first `1 − val_fraction` of `tokens` for training (every window) and the rest for
    /// validation (non-overlapping windows): a contiguous split, as language models are
    /// evaluated on text they have not seen.
    pub fn split(
        tokens: Vec<u32>,
        vocab: usize,
        context: usize,
        val_fraction: f64,
    ) -> Result<(TextData, TextData)> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(Error::arg(
                "text data",
                format!("validation fraction {val_fraction} must be in [0, 1)"),
            ));
        }
        let cut = ((tokens.len() as f64) * (1.0 - val_fraction)).round() as usize;
        let val = tokens[cut.min(tokens.len())..].to_vec();
        let mut train = tokens;
        train.truncate(cut);
        let train = TextData::new(train, vocab, context, 1)?;
        if train.is_empty() {
            return Err(Error::arg(
                "text data",
                format!(
                    "the training text ({} characters) is shorter than one window of {} + 1",
                    train.tokens.len(),
                    context
                ),
            ));
        }
        Ok((train, TextData::new(val, vocab, context, context)?))
    }
}
