//! The CSV reader on arbitrary bytes, with each target-column and header mode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nabla::data::csv::{csv_from_bytes, Header, TargetColumn};

fuzz_target!(|data: &[u8]| {
    let (mode, body) = data.split_first().map_or((0, data), |(m, b)| (*m, b));
    let target = match mode % 4 {
        0 => TargetColumn::Last,
        1 => TargetColumn::None,
        2 => TargetColumn::Index((mode / 4) as usize % 5),
        _ => TargetColumn::Name("label".into()),
    };
    let header = match (mode / 16) % 3 {
        0 => Header::Auto,
        1 => Header::Yes,
        _ => Header::No,
    };
    if let Ok(t) = csv_from_bytes(body, &target, header) {
        let rows = t.features.shape()[0];
        assert!(t.target.is_empty() || t.target.len() == rows);
        let _ = t.into_classification(std::path::Path::new("fuzz.csv"));
    }
});
