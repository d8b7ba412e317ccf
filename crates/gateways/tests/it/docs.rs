//! docs/gateways.md's worked signature example, computed by the signing rule
//! the adapters use, so the document cannot drift from the code.

use ordermq_domain::signing::Keyring;

#[test]
fn the_worked_signature_example_is_what_ordermq_sends() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/gateways.md"
    ))
    .expect("docs/gateways.md");
    let line = |label: &str| -> String {
        docs.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("the example has a {label:?} line"))
            .trim()
            .to_owned()
    };
    let (body, signed, signature) = (line("body "), line("signed "), line("signature "));
    assert_eq!(signed, format!("1795000000000.{body}"));
    let keys = Keyring::new([("k1".to_owned(), b"provider-secret")]).unwrap();
    assert_eq!(keys.sign("1795000000000", body.as_bytes()).hex, signature);
}
