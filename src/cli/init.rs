//! `rivven-connect init`: an example configuration that runs as is.

/// The example printed by `init`.
pub const EXAMPLE: &str = r#"# rivven-connect pipeline configuration.
# Run it:   rivven-connect run -c rivven-connect.yaml
# Check it: rivven-connect check -c rivven-connect.yaml
# Values may come from the environment: ${VAR} or ${VAR:-default}.
version: "1.0"

# No `broker:` section: topics live in the embedded Arrow topic log under
# settings.state_dir, so this runs on one machine with nothing else installed.

sources:
  demo:
    connector: datagen          # `rivven-connect spec datagen` lists every key
    topic: demo-events          # destination topic
    config:
      pattern: orders           # sequence | random | users | orders | events | metrics | key_value
      events_per_second: 10     # 0 = as fast as possible
      max_events: 50            # 0 = unlimited; counts across restarts
      seed: 42                  # same seed, same data
      cdc_mode: false           # true: insert/update/delete change events

sinks:
  console:
    connector: stdout
    topics: [demo-events]       # topics to consume
    consumer_group: console     # committed offsets are kept per group
    start_offset: earliest      # where a new group starts: earliest | latest | a time
    config:
      format: json              # json (one object per line) | pretty | table
      include_metadata: false   # add _meta {topic, partition, offset, append_time}

settings:
  state_dir: ${RIVVEN_STATE_DIR:-./rivven-state}   # topic log, offsets, source positions
  batch:
    max_rows: 8192              # a micro-batch ends at max_rows, max_bytes or linger_ms
    max_bytes: 16777216
    linger_ms: 100
  topic:
    default_partitions: 1
    fsync: always               # always | interval | never
  health:
    enabled: true               # /health and /status (used by `rivven-connect status`)
    port: ${RIVVEN_HEALTH_PORT:-8080}
  metrics:
    enabled: true               # Prometheus /metrics
    port: ${RIVVEN_METRICS_PORT:-9091}
"#;
