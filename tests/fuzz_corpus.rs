//! The fuzz corpus (fuzz/corpus/stream: the seeds, and every input a fuzzing run found to crash,
//! once fixed) and the malformed-stream cases, through what the fuzz target runs: none may panic.

use std::path::Path;

fn run_all(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("the corpus directory") {
        let path = entry.expect("an entry").path();
        let bytes = std::fs::read(&path).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| ferry::fuzzing::stream(&bytes));
        assert!(outcome.is_ok(), "{} panics", path.display());
        n += 1;
    }
    n
}

#[test]
fn no_input_of_the_corpus_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        run_all(&root.join("fuzz/corpus/stream")) > 20,
        "the seed corpus is there"
    );
    assert!(run_all(&root.join("testdata/malformed")) > 20);
}

#[test]
fn what_decodes_encodes_back_the_same() {
    // A stream of every value kind, including the ones a careless encoder would change.
    let stream = br#"{"type":"SCHEMA","stream":"t","schema":{"properties":{"id":{"type":"integer"},"r":{"type":["number","null"]},"s":{"type":["string","null"]},"b":{"type":["string","null"],"contentEncoding":"base64"},"any":{}}},"key_properties":["id"]}
{"type":"RECORD","stream":"t","record":{"id":9223372036854775807,"r":-0.0,"s":"\u0000\ud83d\ude00 \"q\"","b":"AP8=","any":"x"}}
{"type":"RECORD","stream":"t","record":{"id":-9223372036854775808,"r":5e-324,"s":null,"b":null,"any":1.5}}
"#;
    assert_eq!(
        ferry::fuzzing::stream(stream),
        2,
        "both records decode and come back the same"
    );
}
