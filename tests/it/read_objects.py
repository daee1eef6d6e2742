# Reads files written by the object-storage sink with independent readers and compares
# them, row by row, with a reference Arrow IPC file holding what the topic held.
#
# argv[1]: JSON {"ref": ipc path, "format": jsonl|json|csv|parquet|avro,
#                "compression": none|gzip|zstd|snappy|lz4, "files": [paths in offset order],
#                "csv_delimiter": ","}
# Prints JSON {"rows": n, "equal": bool, "detail": str}.
import gzip, io, json, sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.json as pajson
import pyarrow.parquet as pq

spec = json.loads(sys.argv[1])
with open(spec["ref"], "rb") as f:
    ref = ipc.open_file(f).read_all()


def raw(path):
    data = open(path, "rb").read()
    c = spec.get("compression", "none")
    if c == "none":
        return data
    if c == "gzip":
        return gzip.decompress(data)
    if c == "snappy":
        import cramjam
        return bytes(cramjam.snappy.decompress(data))
    if c == "zstd":
        import cramjam
        return bytes(cramjam.zstd.decompress(data))
    if c == "lz4":
        import cramjam
        return bytes(cramjam.lz4.decompress(data))
    raise SystemExit(f"unknown compression {c}")


def flat_schema(schema):
    return pa.Table.from_batches([], schema=schema).flatten().schema


def read(path):
    fmt = spec["format"]
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "avro":
        import fastavro
        with open(path, "rb") as f:
            records = list(fastavro.reader(f))
        return pa.Table.from_pylist(records, schema=ref.schema)
    if fmt == "jsonl":
        opts = pajson.ParseOptions(explicit_schema=ref.schema)
        return pajson.read_json(io.BytesIO(raw(path)), parse_options=opts)
    if fmt == "json":
        rows = json.loads(raw(path))
        assert isinstance(rows, list), "a json file must hold one array"
        lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
        opts = pajson.ParseOptions(explicit_schema=ref.schema)
        return pajson.read_json(io.BytesIO(lines), parse_options=opts)
    if fmt == "csv":
        schema = flat_schema(ref.schema)
        conv = pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True)
        parse = pacsv.ParseOptions(delimiter=spec.get("csv_delimiter", ","))
        return pacsv.read_csv(io.BytesIO(raw(path)), parse_options=parse, convert_options=conv)
    raise SystemExit(f"unknown format {fmt}")


tables = [read(p) for p in spec["files"]]
want = ref.flatten() if spec["format"] == "csv" else ref
if not tables:
    print(json.dumps({"rows": 0, "equal": want.num_rows == 0, "detail": "no files"}))
    sys.exit(0)
got = pa.concat_tables([t.select(want.schema.names).cast(want.schema) for t in tables])
equal = got.equals(want)
detail = ""
if not equal:
    a, b = got.to_pylist(), want.to_pylist()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            detail = f"row {i}: got {x!r} want {y!r}"
            break
    else:
        detail = f"got {len(a)} rows, want {len(b)}"
print(json.dumps({"rows": got.num_rows, "equal": equal, "detail": detail}))
