//! Every committed fuzz input (the minimized corpora in `fuzz/corpus/` and
//! the inputs of past findings in `fuzz/regressions/`) still passes its
//! check: no panic, no differential finding.

use std::path::Path;

use ephemera_fuzz_checks::TARGETS;

fn inputs(folder: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut inputs: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_else(|err| panic!("{err}"));
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn every_committed_fuzz_input_passes_its_check() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (target, check) in TARGETS {
        let corpus = inputs(&fuzz.join("corpus").join(target));
        assert!(!corpus.is_empty(), "{target}: no committed corpus");
        for (name, bytes) in corpus
            .iter()
            .chain(&inputs(&fuzz.join("regressions").join(target)))
        {
            let outcome = std::panic::catch_unwind(|| check(bytes));
            assert!(outcome.is_ok(), "{target}: input {name} fails its check");
        }
    }
}
