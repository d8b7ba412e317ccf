//! The README's promises checked against the code, so the two cannot drift.

use std::collections::BTreeSet;

use ordermq_domain::ErrorCode;

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    std::fs::read_to_string(path).expect("README.md next to the workspace")
}

/// Every backticked code in the code column of the README's error table.
fn codes_in_error_table(readme: &str) -> BTreeSet<String> {
    let table = readme
        .split("| status | code | when |")
        .nth(1)
        .expect("the README has an error table");
    table
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| line.split('|').nth(2))
        .flat_map(|column| column.split('`').skip(1).step_by(2).map(str::to_owned))
        .collect()
}

#[test]
fn the_readme_error_table_lists_exactly_the_stable_codes() {
    let documented = codes_in_error_table(&readme());
    let defined: BTreeSet<String> = ErrorCode::ALL
        .iter()
        .map(|code| code.as_str().to_owned())
        .collect();
    let undocumented: Vec<_> = defined.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&defined).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "README error table out of step: not documented {undocumented:?}, not a code {unknown:?}"
    );
}

#[test]
fn the_table_parser_sees_a_missing_code() {
    // The check above can fail: drop one row and it is noticed.
    let readme = readme().replace(
        "| 409 | `OUT_OF_STOCK` | not enough stock to reserve |\n",
        "",
    );
    assert!(!codes_in_error_table(&readme).contains("OUT_OF_STOCK"));
}
