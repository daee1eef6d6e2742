//! One golden test per transform, predicate and notable option. Inputs: `flat()` (four
//! users) and `changes()` (read, insert, update, delete, truncate on `public.users`).

use crate::support::{
    changes, changes_for, delivered_twice, flat, golden, golden_pipeline, with_meta,
};
use arrow::array::Array;

macro_rules! golden {
    ($name:ident, $input:expr, $yaml:expr) => {
        #[test]
        fn $name() {
            golden(stringify!($name), $yaml, $input, "cdc.users");
        }
    };
}

// extract_new_record_state / unwrap_envelope
golden!(
    unwrap_default_drops_deletes,
    changes(),
    "- type: extract_new_record_state"
);
golden!(
    unwrap_rewrite_deletes_with_metadata,
    changes(),
    r#"
- type: unwrap_envelope
  config: { drop_tombstones: false, add_op: true, add_table: true, add_schema: true, add_ts: true, add_fields: "source.ts_ms,pos" }
"#
);
golden!(
    unwrap_flat_passes_through,
    flat(),
    "- type: extract_new_record_state"
);

// value_to_key
golden!(
    value_to_key_sets_key,
    flat(),
    "- type: value_to_key\n  config: { fields: [id, email] }"
);

// mask_field
golden!(
    mask_replacement,
    flat(),
    "- type: mask_field\n  config: { fields: [email, name] }"
);
golden!(
    mask_keep_last,
    flat(),
    "- type: mask_field\n  config: { fields: [email], keep_last: 4, mask_char: '#' }"
);
golden!(
    mask_hash,
    flat(),
    "- type: mask_field\n  config: { fields: [email], hash: sha256 }"
);
golden!(mask_number_zero_and_text_replacement, flat(), "- type: mask_field\n  config: { fields: [amount] }\n- type: mask_field\n  config: { fields: [id], replacement: 'X' }");
golden!(
    mask_change_event_both_images,
    changes(),
    "- type: mask_field\n  config: { fields: [email], keep_last: 3 }"
);

// insert_field
golden!(
    insert_static,
    flat(),
    "- type: insert_field\n  config: { static_field: region, static_value: eu-west }"
);
golden!(
    insert_static_number_into_change_event,
    changes(),
    "- type: insert_field\n  config: { static_field: tenant, static_value: 42 }"
);

// replace_field / rename_field
golden!(
    replace_rename_include,
    flat(),
    "- type: replace_field\n  config: { include: [id, name, email], renames: { name: full_name } }"
);
golden!(
    rename_exclude_list_form,
    flat(),
    "- type: rename_field\n  config: { exclude: [created, amount], renames: ['email:mail'] }"
);

// routers
golden!(
    regex_router,
    flat(),
    "- type: regex_router\n  config: { regex: 'cdc\\.(.*)', replacement: 'lake.$1' }"
);
golden!(
    regex_router_no_match,
    flat(),
    "- type: regex_router\n  config: { regex: 'other\\.(.*)', replacement: 'x' }"
);
golden!(
    content_router,
    flat(),
    r#"
- type: content_router
  config:
    field: status
    routes: { active: users.active }
    patterns: [{ pattern: 'in.*', topic: users.dormant }]
    default_topic: users.unknown
"#
);
golden!(
    content_router_change_event_current_image,
    changes(),
    "- type: content_router\n  config: { field: status, routes: { active: users.active } }"
);
golden!(timestamp_router, flat(), "- type: timestamp_router\n  config: { field: created, topic_format: '${topic}-${timestamp}', timestamp_format: 'yyyy-MM-dd' }");
golden!(
    timestamp_router_record_time,
    changes(),
    "- type: timestamp_router\n  config: { timestamp_format: 'yyyyMMddHH' }"
);

// time
golden!(
    timestamp_converter_to_string,
    flat(),
    "- type: timestamp_converter\n  config: { fields: [created], format: iso8601 }"
);
golden!(timestamp_converter_to_unix_and_back, flat(), "- type: timestamp_converter\n  config: { field: created, target_type: unix, unix_precision: seconds }\n- type: timestamp_converter\n  config: { field: created, target_type: timestamp, unix_precision: seconds }");
golden!(timestamp_converter_date_and_pattern, flat(), "- type: timestamp_converter\n  config: { fields: [created], target_type: string, format: 'dd/MM/yyyy HH:mm' }");
golden!(timestamp_converter_parse_text, flat(), "- type: timestamp_converter\n  config: { fields: [created], format: 'yyyy-MM-dd HH:mm:ss' }\n- type: timestamp_converter\n  config: { fields: [created], format: 'yyyy-MM-dd HH:mm:ss', target_type: date }");
golden!(timezone_converter, flat(), "- type: timezone_converter\n  config: { target_timezone: Asia/Tokyo }\n- type: cast\n  config: { spec: { created: string } }");
golden!(
    convert_timezone_alias_fields,
    flat(),
    "- type: convert_timezone\n  config: { target_timezone: '-05:00', fields: [created] }"
);

// filter
golden!(
    filter_shorthand,
    flat(),
    "- type: filter\n  config: { condition: 'status = active' }"
);
golden!(
    filter_sql_drop,
    flat(),
    "- type: filter\n  config: { condition: \"email LIKE '%.com' AND amount > 0\", drop: true }"
);
golden!(filter_in_and_null, flat(), "- type: filter\n  config: { condition: \"status IN ('active', 'inactive') AND name IS NOT NULL\" }");
golden!(filter_regex_and_nested, changes(), "- type: filter\n  config: { condition: \"source.table = 'users' AND email ~ '@example\\\\.(com|org)$'\" }");
golden!(
    filter_change_event_uses_before_for_deletes,
    changes(),
    "- type: filter\n  config: { condition: 'id >= 2' }"
);

// cast
golden!(
    cast_map,
    flat(),
    "- type: cast\n  config: { spec: { id: string, amount: 'DECIMAL(10,2)', created: date } }"
);
golden!(
    cast_text_form,
    flat(),
    "- type: cast\n  config: { spec: 'id:int32,amount:int64' }"
);
golden!(
    cast_bad_value_is_error,
    flat(),
    "- type: cast\n  config: { spec: { name: int64 } }"
);

// flatten, unwrap
golden!(
    flatten_change_event,
    changes(),
    "- type: flatten\n  config: { delimiter: _ }"
);
golden!(
    unwrap_struct_field,
    changes(),
    "- type: unwrap\n  config: { field: source }"
);

// headers
golden!(header_to_value_change_event, changes(), "- type: header_to_value\n  config: { headers: [op, source.table, pos], fields: [event_op, event_table, lsn] }");
golden!(header_from_move_flat, changes(), "- type: extract_new_record_state\n  config: { add_op: true, add_table: true }\n- type: header_from\n  config: { headers: [op], fields: [operation], operation: move }");
golden!(drop_headers, changes(), "- type: extract_new_record_state\n  config: { add_op: true, add_table: true }\n- type: drop_headers\n  config: { headers: [table, missing] }");
golden!(
    drop_headers_change_event_is_error,
    changes(),
    "- type: drop_headers\n  config: { headers: [op] }"
);
golden!(
    message_timestamp_change_event,
    changes(),
    "- type: message_timestamp\n  config: { field: created }"
);
golden!(
    message_timestamp_flat,
    flat(),
    "- type: message_timestamp\n  config: { field: created }"
);

// set_null, drop_null
golden!(
    set_null_all,
    flat(),
    "- type: set_null\n  config: { fields: [email] }"
);
golden!(
    set_null_condition,
    flat(),
    "- type: set_null\n  config: { fields: [email, amount], condition: \"status = 'inactive'\" }"
);
golden!(
    drop_null_fields,
    flat(),
    "- type: drop_null\n  config: { fields: [name, email] }"
);

// compute_field
golden!(
    compute_concat_upper_lower,
    flat(),
    r#"
- type: compute_field
  config: { field: label, operation: concat, fields: [id, name, status], separator: '|' }
- type: compute_field
  config: { field: shout, operation: upper, fields: [name] }
- type: compute_field
  config: { field: name, operation: lower, fields: [name] }
"#
);
golden!(
    compute_hash_coalesce_expression,
    flat(),
    r#"
- type: compute_field
  config: { field: digest, operation: hash, fields: [id, email], algorithm: md5 }
- type: compute_field
  config: { field: contact, operation: coalesce, fields: [email, name] }
- type: compute_field
  config: { field: cents, operation: expression, expression: 'CAST(round(amount * 100) AS BIGINT)' }
"#
);

// sql
golden!(sql_select_where, flat(), "- type: sql\n  config: { query: \"SELECT id, upper(name) AS name, amount * 2 AS doubled FROM input WHERE status = 'active'\" }");
golden!(sql_over_change_events, changes(), "- type: sql\n  config: { query: \"SELECT op, source.table AS tbl, id, email FROM input WHERE op <> 't'\" }");
golden!(
    sql_aggregate_rejected,
    flat(),
    "- type: sql\n  config: { query: 'SELECT count(*) FROM input' }"
);

// predicates
golden!(
    predicate_table_match,
    changes(),
    "- type: mask_field\n  predicate: { table: users }\n  config: { fields: [email] }"
);
golden!(predicate_table_no_match, changes(), "- type: mask_field\n  predicate: { tables: ['orders', 'public\\.items'] }\n  config: { fields: [email] }");
golden!(predicate_qualified_table_and_schema, changes_for("sales", "users"), "- type: mask_field\n  predicate: { tables: ['sales\\.users'], schemas: ['sal.*'] }\n  config: { fields: [name] }");
golden!(predicate_operations_zip, changes(), "- type: mask_field\n  predicate: { operations: [update, delete] }\n  config: { fields: [email] }");
golden!(predicate_operations_snapshot_truncate, changes(), "- type: filter\n  predicate: { operations: [snapshot, truncate] }\n  config: { condition: 'false' }");
golden!(predicate_field_value, flat(), "- type: mask_field\n  predicate: { field_value: { field: status, value: active } }\n  config: { fields: [name] }");
golden!(predicate_field_value_text_negate, flat(), "- type: set_null\n  predicate: { field_value: 'status=active', negate: true }\n  config: { fields: [amount] }");
golden!(predicate_field_exists, flat(), "- type: insert_field\n  predicate: { field_exists: email }\n  config: { static_field: has_email, static_value: true }\n- type: insert_field\n  predicate: { field_exists: phone }\n  config: { static_field: has_phone, static_value: true }");
golden!(predicate_schema_changing_runs, flat(), "- type: cast\n  predicate: { field_value: 'status=active' }\n  config: { spec: { id: string } }");
golden!(predicate_router_selected_rows_only, changes(), "- type: regex_router\n  predicate: { operations: [delete] }\n  config: { regex: 'cdc\\.(.*)', replacement: 'deletes.$1' }");
golden!(predicate_flat_operations_from_op_column, changes(), "- type: extract_new_record_state\n  config: { add_op: true, drop_tombstones: false }\n- type: filter\n  predicate: { operations: [delete] }\n  config: { condition: 'false' }");

// config errors
// The list of types includes externalize_blob: the workspace builds rivven-sql with `blob`.
#[cfg(feature = "blob")]
golden!(error_unknown_type, flat(), "- type: mangle\n  config: {}");
golden!(
    error_unknown_key,
    flat(),
    "- type: mask_field\n  config: { fields: [email], replace: x }"
);
golden!(
    error_missing_field,
    flat(),
    "- type: mask_field\n  config: { fields: [ssn] }"
);
golden!(
    error_bad_sql,
    flat(),
    "- type: filter\n  config: { condition: 'status = = 1' }"
);
golden!(
    error_bad_regex_predicate,
    flat(),
    "- type: filter\n  predicate: { table: '(' }\n  config: { condition: 'true' }"
);

// encrypt_field / decrypt_field (ciphertext is random: checked by round trip, not golden)
#[test]
fn encryption_round_trips_and_binds_values_to_fields() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k1");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    let keys = format!("[{{id: k1, file: {}}}]", key.display());
    let enc =
        format!("- type: encrypt_field\n  config: {{ fields: [email, amount], keys: {keys} }}");
    let list: serde_yaml::Value = serde_yaml::from_str(&enc).unwrap();
    let mut chain = rivven_sql::SqlTransforms.create_list(&list).unwrap();
    let sealed = chain.apply(flat(), "t").unwrap().remove(0).batch;
    let emails = sealed.column_by_name("email").unwrap();
    let text = arrow::util::display::array_value_to_string(emails, 0).unwrap();
    assert!(text.starts_with("rivven:enc:1:aes256gcm:k1:"), "{text}");
    assert!(!text.contains("ada@"), "{text}");
    assert!(emails.is_null(1), "nulls stay null");
    let dec =
        format!("- type: decrypt_field\n  config: {{ fields: [email, amount], keys: {keys} }}");
    let list: serde_yaml::Value = serde_yaml::from_str(&dec).unwrap();
    let mut back = rivven_sql::SqlTransforms.create_list(&list).unwrap();
    let clear = back.apply(sealed.clone(), "t").unwrap().remove(0).batch;
    assert_eq!(
        clear.columns(),
        flat().columns(),
        "original values and types restored"
    );

    // A value moved to another field fails authentication instead of decrypting.
    let swapped = arrow::array::RecordBatch::try_new(
        sealed.schema(),
        sealed
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let name = if f.name() == "amount" {
                    "email"
                } else {
                    f.name().as_str()
                };
                sealed.column_by_name(name).unwrap().clone()
            })
            .collect(),
    )
    .unwrap();
    let err = back.apply(swapped, "t").unwrap_err().to_string();
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains(&"ab".repeat(32)), "{err}");
}

// cdc_features (pipeline-level: errors are relative to the source's key)
macro_rules! golden_pipeline {
    ($name:ident, $input:expr, $yaml:expr) => {
        #[test]
        fn $name() {
            golden_pipeline(stringify!($name), $yaml, $input, "cdc.users");
        }
    };
}

fn keyed_changes() -> arrow::array::RecordBatch {
    with_meta(changes(), rivven_engine::batch::META_KEY, "id")
}

golden_pipeline!(
    features_dedup_drops_redelivered_events,
    delivered_twice(changes()),
    "cdc_features: { deduplication: { enabled: true, ttl_seconds: 60, max_entries: 1000 } }"
);
golden_pipeline!(
    features_dedup_disabled_keeps_everything,
    delivered_twice(changes()),
    "cdc_features: { deduplication: { enabled: false } }"
);
golden_pipeline!(
    features_tombstone_after_delete_with_key,
    keyed_changes(),
    "cdc_features: { tombstones: { enabled: true, emit_tombstone_after_delete: true } }"
);
golden_pipeline!(
    features_tombstone_emit_null,
    changes(),
    "cdc_features: { tombstones: { enabled: true, behavior: emit_null } }"
);
golden_pipeline!(
    features_tombstones_after_unwrap_is_error,
    keyed_changes(),
    "cdc_features: { tombstones: { enabled: true } }\ntransforms:\n- type: extract_new_record_state\n  config: { drop_tombstones: false, add_op: true }"
);
golden_pipeline!(
    features_tombstones_need_change_events,
    flat(),
    "cdc_features: { tombstones: { enabled: true } }"
);
golden_pipeline!(
    features_router_priority_default_destination,
    changes(),
    "cdc_features:\n  router:\n    enabled: true\n    default_destination: cdc.other\n    rules:\n      - { condition_type: table, condition_value: users, destination: cdc.users.all, priority: 1 }\n      - { condition_type: operation, condition_value: DELETE, destination: cdc.deletes, priority: 10 }\n      - { condition_type: field_equals, condition_value: status=inactive, destination: cdc.inactive, priority: 5 }"
);
golden_pipeline!(
    features_router_dead_letter_queue,
    changes(),
    "cdc_features:\n  router:\n    enabled: true\n    dead_letter_queue: cdc.dlq\n    rules:\n      - { condition_type: field_exists, condition_value: ssn, destination: cdc.never, priority: 0 }\n      - { condition_type: field_equals, condition_value: status=active, destination: cdc.active, priority: 3 }"
);
golden_pipeline!(
    features_router_drop_unroutable_after_unwrap,
    changes(),
    "transforms:\n- type: extract_new_record_state\n  config: { add_op: true }\ncdc_features:\n  router:\n    enabled: true\n    drop_unroutable: true\n    rules:\n      - { condition_type: table_pattern, condition_value: 'us.rs', destination: cdc.users.flat }\n      - { condition_type: operation, condition_value: 'snapshot,c', destination: cdc.created, priority: 2 }"
);
golden_pipeline!(
    features_router_schema_and_always,
    changes_for("sales", "orders"),
    "cdc_features:\n  router:\n    enabled: true\n    rules:\n      - { condition_type: schema, condition_value: public, destination: cdc.public, priority: 2 }\n      - { condition_type: always, destination: cdc.rest }"
);
golden_pipeline!(
    features_router_config_errors,
    changes(),
    "cdc_features:\n  router:\n    enabled: true\n    drop_unroutable: true\n    dead_letter_queue: q\n    rules:\n      - { condition_type: operation, condition_value: upsert, destination: a }\n      - { condition_type: table, destination: b }\n      - { condition_type: table_pattern, condition_value: '(', destination: c }"
);
golden_pipeline!(
    features_partitioner_key_hash_record_key,
    keyed_changes(),
    "cdc_features: { partitioner: { enabled: true, num_partitions: 4 } }"
);
golden_pipeline!(
    features_partitioner_key_columns_flat,
    flat(),
    "cdc_features: { partitioner: { enabled: true, num_partitions: 3, strategy: key_hash, key_columns: [status] } }"
);
golden_pipeline!(
    features_partitioner_table_hash,
    changes(),
    "cdc_features: { partitioner: { enabled: true, num_partitions: 8, strategy: table_hash } }"
);
golden_pipeline!(
    features_partitioner_round_robin,
    flat(),
    "cdc_features: { partitioner: { enabled: true, num_partitions: 3, strategy: round_robin } }"
);
golden_pipeline!(
    features_partitioner_key_hash_needs_a_key,
    changes(),
    "cdc_features: { partitioner: { enabled: true } }"
);
golden_pipeline!(
    features_unknown_key_is_error,
    changes(),
    "cdc_features: { deduplication: { enabled: true, ttl: 5 }, masking: {} }"
);
golden_pipeline!(
    features_order_dedup_router_tombstones_partitioner,
    with_meta(delivered_twice(changes()), rivven_engine::batch::META_KEY, "id"),
    "cdc_features:\n  deduplication: { enabled: true }\n  tombstones: { enabled: true }\n  router: { enabled: true, rules: [{ condition_type: operation, condition_value: 'u,d', destination: cdc.changes }] }\n  partitioner: { enabled: true, num_partitions: 2 }\ntransforms:\n- type: mask_field\n  config: { fields: [email] }"
);

// dead-letter topic for rows a transform fails on
golden_pipeline!(
    dead_letter_isolates_failing_rows,
    flat(),
    "dead_letter_topic: users.dlq\ntransforms:\n- type: sql\n  config:\n    query: \"SELECT id, CAST(CASE WHEN id = 2 THEN 'x' ELSE CAST(id AS VARCHAR) END AS BIGINT) AS n FROM input\""
);
golden_pipeline!(
    dead_letter_absent_fails_the_batch,
    flat(),
    "transforms:\n- type: sql\n  config:\n    query: \"SELECT id, CAST(CASE WHEN id = 2 THEN 'x' ELSE CAST(id AS VARCHAR) END AS BIGINT) AS n FROM input\""
);

#[test]
fn sticky_partitioner_moves_on_per_batch() {
    use rivven_engine::registry::TransformPlan;
    let spec = crate::support::pipeline_spec(
        "cdc_features: { partitioner: { enabled: true, num_partitions: 3, strategy: sticky } }",
    );
    let mut chain = rivven_sql::SqlPlan::new(&spec).unwrap().create().unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let out = chain.apply(flat(), "t").unwrap();
        assert_eq!(out.len(), 1, "a sticky batch stays whole");
        assert_eq!(out[0].batch.num_rows(), 4);
        seen.push(out[0].partition.unwrap().partition);
    }
    assert_eq!(seen, vec![0, 1, 2, 0]);
}

#[test]
fn encryption_feature_is_decrypted_by_decrypt_field() {
    use rivven_engine::registry::TransformPlan;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "cd".repeat(32)).unwrap();
    let keys = format!("[{{id: k7, file: {}}}]", key.display());
    let spec = crate::support::pipeline_spec(&format!(
        "cdc_features: {{ encryption: {{ enabled: true, fields: [email], algorithm: chacha20-poly1305, keys: {keys} }} }}"
    ));
    let mut chain = rivven_sql::SqlPlan::new(&spec).unwrap().create().unwrap();
    let sealed = chain.apply(changes(), "t").unwrap().remove(0).batch;
    let after = sealed.column_by_name("after").unwrap();
    let text = arrow::util::display::array_value_to_string(after, 0).unwrap();
    assert!(text.contains("rivven:enc:1:chacha20poly1305:k7:"), "{text}");
    assert!(!text.contains("@example"), "{text}");
    let dec = format!("- type: decrypt_field\n  config: {{ fields: [email], keys: {keys} }}");
    let list: serde_yaml::Value = serde_yaml::from_str(&dec).unwrap();
    let mut back = rivven_sql::SqlTransforms.create_list(&list).unwrap();
    let clear = back.apply(sealed, "t").unwrap().remove(0).batch;
    // Values are restored (row images come back with nullable fields, as after any rewrite).
    let show = |b| {
        arrow::util::pretty::pretty_format_batches(&[b])
            .unwrap()
            .to_string()
    };
    assert_eq!(show(clear), show(changes()));
}

#[test]
fn encryption_feature_without_keys_names_the_default_variable() {
    use rivven_engine::registry::TransformPlan;
    // The variable is never set by the test suite.
    let spec = crate::support::pipeline_spec(
        "cdc_features: { encryption: { enabled: true, fields: [email] } }",
    );
    assert!(rivven_sql::SqlPlan::new(&spec).is_ok());
    if std::env::var(rivven_sql::features::DEFAULT_KEY_ENV).is_err() {
        let mut chain = rivven_sql::SqlPlan::new(&spec).unwrap().create().unwrap();
        let err = chain.apply(changes(), "t").unwrap_err().to_string();
        assert!(err.contains("RIVVEN_ENCRYPTION_KEY"), "{err}");
    }
}

// Fused selections: rows a filter drops never make a later step fail.
golden!(
    fused_filter_then_failing_rewrite_sees_kept_rows_only,
    flat(),
    "- type: filter\n  config: { condition: \"status = 'active'\" }\n- type: compute_field\n  config: { field: n, operation: expression, expression: \"CAST(CASE WHEN id = 2 THEN 'x' ELSE '1' END AS BIGINT)\" }\n- type: filter\n  config: { condition: 'id > 1' }"
);
golden!(
    fused_unwrap_filter_mask_rename,
    changes(),
    "- type: extract_new_record_state\n- type: mask_field\n  config: { fields: [email], keep_last: 4 }\n- type: filter\n  config: { condition: \"status = 'active'\" }\n- type: rename_field\n  config: { renames: { name: full_name } }"
);

// externalize_blob on the local storage type: the golden text holds the outputs (the temp
// directory shown as `$DIR`), which fields are marked externalized, and every stored file.
#[cfg(feature = "blob")]
mod blob {
    use crate::support::{apply, changes, compare, flat, golden, render, run, Rows};
    use arrow::array::RecordBatch;
    use sha2::Digest;
    use std::path::Path;

    /// Run `yaml` (`$DIR` = a fresh directory) over `input`; compare the outputs (rows as
    /// JSON), the fields marked externalized, and every stored file.
    fn golden_blob(name: &str, yaml: &str, input: RecordBatch) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let yaml = yaml.replace("$DIR", &root);
        let mut got = match apply(&yaml, input, "cdc.users") {
            Ok(outs) => {
                let marked = marked(&outs[0].batch.schema());
                let text = render(outs, Rows::Json).replace(&root, "$DIR");
                format!("{text}externalized: {marked}\n")
            }
            Err(e) => format!("error: {e}\n"),
        };
        for (rel, bytes) in files(dir.path()) {
            let sha = format!("{:x}", sha2::Sha256::digest(&bytes));
            assert!(
                rel.ends_with(&sha),
                "{rel} is named by its content's SHA-256"
            );
            got.push_str(&format!(
                "file: {rel} = {:?}\n",
                String::from_utf8_lossy(&bytes)
            ));
        }
        compare(name, &got);
    }

    /// Fields carrying `rivven.externalized = true` (top level, or in `after`).
    fn marked(schema: &arrow::datatypes::Schema) -> String {
        let fields = match schema.field_with_name("after").map(|f| f.data_type()) {
            Ok(arrow::datatypes::DataType::Struct(f)) => f.clone(),
            _ => schema.fields().clone(),
        };
        let names: Vec<&str> = fields
            .iter()
            .filter(|f| f.metadata().get("rivven.externalized").map(String::as_str) == Some("true"))
            .map(|f| f.name().as_str())
            .collect();
        names.join(", ")
    }

    /// Every file under `dir`, relative path and bytes, sorted.
    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().display().to_string();
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn externalize_blob_flat_text_and_binary() {
        // Default fields: every text and binary field (`email` is made binary first).
        golden_blob(
            "externalize_blob_flat",
            "- type: cast\n  config: { spec: { email: bytes } }\n- type: externalize_blob\n  config: { storage_type: local, path: '$DIR', prefix: blobs/, size_threshold: 7 }\n- type: externalize_blob\n  config: { storage_type: local, path: '$DIR/unused' }",
            flat(),
        );
    }

    #[test]
    fn externalize_blob_change_event_both_images() {
        golden_blob(
            "externalize_blob_change_event",
            "- type: externalize_blob\n  config: { storage_type: local, path: '$DIR', fields: email, size_threshold: 14 }",
            changes(),
        );
    }

    #[test]
    fn externalize_blob_predicated() {
        // A batch the predicate selects no row of passes unchanged; in a batch where it
        // selects some, the others stay inline (`url` null) in the same output batch.
        golden_blob(
            "externalize_blob_predicated",
            "- type: externalize_blob\n  predicate: { table: orders }\n  config: { storage_type: local, path: '$DIR', size_threshold: 0 }\n- type: externalize_blob\n  predicate: { field_value: 'status=active' }\n  config: { storage_type: local, path: '$DIR', fields: [email], size_threshold: 0 }",
            flat(),
        );
    }

    #[test]
    fn externalize_blob_equal_values_share_one_object_and_replays_rewrite_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "- type: externalize_blob\n  config: {{ storage_type: local, path: '{}', fields: [status], size_threshold: 1 }}",
            dir.path().display()
        );
        let first = run(&yaml, flat(), "t").unwrap();
        let before = files(dir.path());
        // "active" twice and "inactive" once: two objects.
        assert_eq!(before.len(), 2, "{before:?}");
        let again = run(&yaml, flat(), "t").unwrap();
        assert_eq!(first, again, "a replay gives the same references");
        assert_eq!(files(dir.path()), before, "and the same files");
    }

    /// The transform waits for its uploads from any caller: a multi-thread runtime's worker
    /// (the engine's case), a current-thread runtime, or no runtime (the tests above); and
    /// it is dropped inside a runtime without panicking.
    fn apply_in_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "- type: externalize_blob\n  config: {{ storage_type: local, path: '{}', fields: [email], size_threshold: 0 }}",
            dir.path().display()
        );
        let out = run(&yaml, flat(), "t").unwrap();
        assert!(out.contains("file://"), "{out}");
        assert_eq!(files(dir.path()).len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn externalize_blob_in_a_multi_thread_runtime() {
        apply_in_runtime();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn externalize_blob_in_a_current_thread_runtime() {
        apply_in_runtime();
    }

    golden!(
        externalize_blob_error_unknown_key,
        flat(),
        "- type: externalize_blob\n  config: { storage_type: s3, bucket: b, buckets: c }"
    );
    golden!(
        externalize_blob_error_missing_bucket,
        flat(),
        "- type: externalize_blob\n  config: { storage_type: s3, region: eu-west-1 }"
    );
    golden!(
        externalize_blob_error_keys_of_other_storage_type,
        flat(),
        "- type: externalize_blob\n  config: { storage_type: local, path: /tmp/x, bucket: b, region: eu-west-1, secret_access_key: hunter2, account_name: acct }"
    );
    golden!(
        externalize_blob_error_not_binary_or_text,
        flat(),
        "- type: externalize_blob\n  config: { storage_type: local, path: /tmp/x, fields: [name, amount] }"
    );
    golden!(
        externalize_blob_error_bad_prefix_and_empty_fields,
        flat(),
        "- type: externalize_blob\n  config: { storage_type: gcs, bucket: b, prefix: 'a//b', fields: [] }"
    );
}

/// Two identical inserts in one transaction (same `source.pos` and `txid`).
fn twin_inserts() -> arrow::array::RecordBatch {
    let c = changes();
    arrow::compute::take_record_batch(&c, &arrow::array::UInt32Array::from(vec![1, 1])).unwrap()
}

#[test]
fn dedup_keeps_identical_changes_of_one_transaction_and_drops_their_redelivery() {
    use rivven_engine::registry::TransformPlan;
    let spec = crate::support::pipeline_spec("cdc_features: { deduplication: { enabled: true } }");
    let mut chain = rivven_sql::SqlPlan::new(&spec).unwrap().create().unwrap();
    let rows = |b: arrow::array::RecordBatch,
                chain: &mut Box<dyn rivven_engine::connector::Transform>|
     -> usize {
        chain
            .apply(b, "t")
            .unwrap()
            .iter()
            .map(|r| r.batch.num_rows())
            .sum()
    };
    assert_eq!(
        rows(twin_inserts(), &mut chain),
        2,
        "both changes of the transaction"
    );
    // Another transaction in between, then the first one delivered again.
    assert_eq!(rows(changes_for("public", "orders"), &mut chain), 5);
    assert_eq!(
        rows(twin_inserts(), &mut chain),
        0,
        "a redelivery is dropped whole"
    );
}

#[test]
fn every_chain_of_a_plan_starts_with_empty_dedup_memory() {
    // A plan is parsed once and builds a chain per attempt of the pipeline. What one
    // attempt remembered must not drop the replay of the next: those rows may never have
    // reached the topic.
    use rivven_engine::registry::TransformPlan;
    let spec = crate::support::pipeline_spec("cdc_features: { deduplication: { enabled: true } }");
    let plan = rivven_sql::SqlPlan::new(&spec).unwrap();
    let count = |chain: &mut Box<dyn rivven_engine::connector::Transform>| -> usize {
        chain
            .apply(changes_for("public", "orders"), "t")
            .unwrap()
            .iter()
            .map(|r| r.batch.num_rows())
            .sum()
    };
    let mut first = plan.create().unwrap();
    assert_eq!(count(&mut first), 5);
    assert_eq!(count(&mut first), 0, "the same attempt drops a repeat");
    let mut second = plan.create().unwrap();
    assert_eq!(count(&mut second), 5, "a new attempt remembers nothing");
}

golden_pipeline!(
    features_tombstones_then_key_hash_with_a_not_null_field,
    keyed_changes(),
    "transforms:\n- type: insert_field\n  config: { static_field: tenant, static_value: 42 }\ncdc_features:\n  tombstones: { enabled: true }\n  partitioner: { enabled: true, num_partitions: 4, strategy: key_hash, key_columns: [tenant, id] }"
);
golden_pipeline!(
    features_tombstone_emit_null_follows_its_delete_partition,
    keyed_changes(),
    "cdc_features:\n  tombstones: { enabled: true, behavior: emit_null }\n  partitioner: { enabled: true, num_partitions: 4 }"
);

#[test]
fn a_rewrite_failing_only_on_rows_a_fused_filter_drops_still_succeeds() {
    // 20 rows, the filter drops one (a dense selection, so the rewrite runs fused over it
    // first); the rewrite fails on exactly that row.
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema,
        vec![std::sync::Arc::new(
            arrow::array::Int64Array::from_iter_values(1..=20),
        )],
    )
    .unwrap();
    let yaml = "- type: filter\n  config: { condition: 'id <> 2' }\n- type: compute_field\n  config: { field: n, operation: expression, expression: \"CAST(CASE WHEN id = 2 THEN 'x' ELSE '1' END AS BIGINT)\" }";
    let list: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    let mut chain = rivven_sql::SqlTransforms.create_list(&list).unwrap();
    let out = chain.apply(batch, "t").unwrap();
    let rows: usize = out.iter().map(|r| r.batch.num_rows()).sum();
    assert_eq!(rows, 19);
    for r in &out {
        let n = r
            .batch
            .column_by_name("n")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        assert!(n.iter().all(|v| v == Some(1)));
    }
}
