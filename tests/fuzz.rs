//! A short run of every fuzz harness (`src/fuzz.rs`): each parser fed by miners, load
//! balancers, the daemon, the wallet or API clients takes mutated inputs without panicking.
//! `PASTELLA_FUZZ_CASES` raises the count per parser; `examples/fuzz.rs` runs millions and
//! reports rates and the largest allocation (docs/FUZZ.md).

use pastella_pool::fuzz;

fn cases() -> u64 {
    std::env::var("PASTELLA_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

#[test]
fn every_parser_survives_mutated_input() {
    let cases = cases();
    let mut failures = Vec::new();
    for target in fuzz::targets() {
        let report = fuzz::run(&target, cases, 0x5eed);
        assert_eq!(report.cases, cases);
        if report.panics > 0 {
            let inputs: Vec<String> = report.crashes.iter().map(hex::encode).collect();
            failures.push(format!("{}: {} panics, inputs (hex): {}", target.name, report.panics, inputs.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
