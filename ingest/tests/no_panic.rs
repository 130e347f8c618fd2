//! Property tests: no input makes a decoder panic. Arbitrary bytes, and real records
//! cut short or with bytes changed, either decode or come back as a dead-letter reason.

use ingest::{DecodeLimits, Decoder, Format, Provenance, ServiceKeyer};
use proptest::prelude::*;

const FORMATS: [Format; 7] = [
    Format::Falco,
    Format::Tetragon,
    Format::K8sAudit,
    Format::Docker,
    Format::FluentBit,
    Format::Native,
    Format::Auto,
];

fn golden_lines() -> Vec<Vec<u8>> {
    let dir =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("tests/golden");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".input.jsonl") {
            let bytes = std::fs::read(&path).unwrap();
            lines.extend(
                bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec),
            );
        }
    }
    lines
}

fn decode_everywhere(payload: &[u8]) {
    let mut decoder = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
    for format in FORMATS {
        let mut out = Vec::new();
        let _ = decoder.decode(format, payload, &Provenance::default(), &mut out);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everywhere(&payload);
    }

    #[test]
    fn json_like_text_never_panics(payload in r#"\{("[a-z_@.A-Z]{1,12}":(-?[0-9]{1,20}|"[^"]{0,8}"|null|true|\[\]|\{\}),?){0,6}\}"#) {
        decode_everywhere(payload.as_bytes());
    }

    #[test]
    fn damaged_real_records_never_panic(pick in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>(),
                                        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let lines = golden_lines();
        let mut line = pick.get(&lines).clone();
        if !line.is_empty() {
            for (at, byte) in flips {
                let i = at.index(line.len());
                line[i] = byte;
            }
            line.truncate(cut.index(line.len() + 1));
        }
        decode_everywhere(&line);
    }
}
