//! The change feed's JSON Schemas (`schemas/feed/`) are the data team's
//! contract: every event the domain builds must validate against its
//! type's schema, and a schema may only grow. Each file of
//! `schemas/feed/released/` is the copy of a released schema; the current
//! one must keep every property it had with the same type, and every field
//! it required. An additive change (a new optional or required property)
//! passes; copy the file to `released/` when it ships. A removed or renamed
//! field, a changed type, or a field no longer required fails.

use std::path::PathBuf;

use ordermq_domain::feed::{FeedChange, FeedEvent, FeedLine, OrderState};
use serde_json::Value;

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/feed")
}

fn load(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The JSON types a schema's `type` allows (a string or a list of them).
fn types(schema: &Value) -> Vec<String> {
    match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(list) => list
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn required(schema: &Value) -> Vec<String> {
    schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What of JSON Schema the feed's schemas use: `type`, `required`,
/// `properties`, `items`, `const`, `enum`, `minimum`. Returns each violation.
fn validate(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let allowed = types(schema);
    if !allowed.is_empty() && !allowed.iter().any(|t| t == type_of(value)) {
        errors.push(format!("{at}: {} is not {allowed:?}", type_of(value)));
        return;
    }
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        errors.push(format!("{at}: {value} is not {expected}"));
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_i64(), value.as_i64())
        && n < min
    {
        errors.push(format!("{at}: {n} < {min}"));
    }
    if let Value::Object(fields) = value {
        for name in required(schema) {
            if !fields.contains_key(&name) {
                errors.push(format!("{at}: {name} is missing"));
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (name, sub) in properties {
                if let Some(field) = fields.get(name) {
                    validate(sub, field, &format!("{at}.{name}"), errors);
                }
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            validate(item, v, &format!("{at}[{i}]"), errors);
        }
    }
}

/// Why `current` would break a consumer written against `released`.
fn incompatibilities(released: &Value, current: &Value, at: &str, out: &mut Vec<String>) {
    let (old, new) = (types(released), types(current));
    if !old.iter().all(|t| new.contains(t)) {
        out.push(format!("{at}: type changed from {old:?} to {new:?}"));
    }
    let now_required = required(current);
    for name in required(released) {
        if !now_required.contains(&name) {
            out.push(format!("{at}: {name} is no longer required"));
        }
    }
    if let Some(properties) = released["properties"].as_object() {
        for (name, sub) in properties {
            match current["properties"].get(name) {
                None => out.push(format!("{at}: {name} was removed or renamed")),
                Some(now) => incompatibilities(sub, now, &format!("{at}.{name}"), out),
            }
        }
    }
    if let (Some(old), Some(new)) = (released.get("items"), current.get("items")) {
        incompatibilities(old, new, &format!("{at}[]"), out);
    }
    if released.get("const") != current.get("const") {
        out.push(format!("{at}: const changed"));
    }
}

fn sample(change: FeedChange) -> FeedEvent {
    let state = OrderState {
        order_id: "O1795000000000000000000000001".into(),
        user_id: "u1".into(),
        status: "PAID".into(),
        amount: 17800,
        payment_id: None,
        created_at: 1_795_000_000_000,
        updated_at: 1_795_000_000_500,
        lines: vec![FeedLine {
            sku: "SKU-1".into(),
            quantity: 2,
            unit_price: 8900,
            refunded: 1,
        }],
    };
    FeedEvent::new(change, 3, state, 1_795_000_000_500)
}

#[test]
fn every_event_type_validates_against_its_schema() {
    for change in FeedChange::ALL {
        let schema = load(schemas_dir().join(change.schema_file()));
        let event: Value = serde_json::from_str(&sample(change).to_json()).unwrap();
        let mut errors = Vec::new();
        validate(&schema, &event, change.as_str(), &mut errors);
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(
            event["dataschema"], schema["$id"],
            "dataschema names the schema"
        );
    }
}

#[test]
fn every_schema_is_backward_compatible_with_its_released_copy() {
    let released = schemas_dir().join("released");
    let mut files = 0;
    for entry in std::fs::read_dir(&released).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let mut out = Vec::new();
        incompatibilities(
            &load(path),
            &load(schemas_dir().join(&name)),
            &name.to_string_lossy(),
            &mut out,
        );
        assert!(out.is_empty(), "{out:#?}");
        files += 1;
    }
    assert_eq!(files, FeedChange::ALL.len(), "one released copy per type");
}

fn order(s: &mut Value) -> &mut Value {
    &mut s["properties"]["data"]["properties"]["order"]
}

/// The check itself: it refuses what would break a consumer and lets
/// additions pass.
#[test]
fn the_compatibility_check_refuses_removals_renames_and_type_changes() {
    let released = load(schemas_dir().join("released/order.paid.v1.json"));
    let check = |edit: &dyn Fn(&mut Value)| {
        let mut current = released.clone();
        edit(&mut current);
        let mut out = Vec::new();
        incompatibilities(&released, &current, "order.paid", &mut out);
        out
    };
    assert!(check(&|_| {}).is_empty());
    assert!(
        check(&|s| {
            s["properties"]["data"]["properties"]["order"]["properties"]["currency"] =
                serde_json::json!({"type": "string"});
        })
        .is_empty(),
        "adding a field is compatible"
    );
    let renamed = check(&|s| {
        let props = order(s)["properties"].as_object_mut().unwrap();
        let amount = props.remove("amount").unwrap();
        props.insert("total".into(), amount);
    });
    assert!(
        renamed.iter().any(|e| e.contains("amount was removed")),
        "{renamed:?}"
    );
    let retyped = check(&|s| order(s)["properties"]["amount"]["type"] = "string".into());
    assert!(
        retyped.iter().any(|e| e.contains("type changed")),
        "{retyped:?}"
    );
    let optional = check(&|s| {
        order(s)["required"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f != "user_id")
    });
    assert!(
        optional
            .iter()
            .any(|e| e.contains("user_id is no longer required")),
        "{optional:?}"
    );
}
