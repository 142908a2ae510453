-- shapebench store schema. One file, idempotent: every statement is safe to run on an
-- existing store. Bump SCHEMA_VERSION in store/schema.py when a column changes meaning.

CREATE TABLE IF NOT EXISTS schema_info (
    schema_version INTEGER NOT NULL,
    created_at     TIMESTAMP NOT NULL
);

-- One execution of a plan on one machine (one hardware regime).
CREATE TABLE IF NOT EXISTS runs (
    run_id        VARCHAR PRIMARY KEY,
    series_id     VARCHAR,            -- links repeats of one plan (reproducibility)
    started_at    TIMESTAMP,
    finished_at   TIMESTAMP,          -- NULL while running or when killed
    status        VARCHAR NOT NULL,   -- running | finished | interrupted | failed
    plan_name     VARCHAR,
    plan          JSON,               -- the validated plan as run
    environment   JSON,               -- device, driver, CUDA, library versions, host
    regime        VARCHAR NOT NULL,   -- hardware key, e.g. "NVIDIA H100 80GB HBM3 | driver 580.65 | CUDA 13.0"
    device_kind   VARCHAR NOT NULL,   -- cuda | cpu
    tool_version  VARCHAR,
    git_revision  VARCHAR,
    shuffle_seed  BIGINT,
    n_cells_planned INTEGER,
    calibration   JSON,               -- measured ceilings: bandwidth, compute, launch latency
    protocol_version INTEGER,         -- 1: one pass per cell, unpinned; 2: pinned host, interleaved rounds
    machine_load  JSON                -- busy-machine verdict of meta.json (runner.machine_load.load_summary):
                                      -- busy, samples, busy_samples, worst; NULL: not sampled (older runs)
);

-- One measured combination (model shape, backend, device, dtype, batch, prompt, gen).
CREATE TABLE IF NOT EXISTS cells (
    cell_id         VARCHAR PRIMARY KEY,  -- run_id + '/' + cell_key
    run_id          VARCHAR NOT NULL,
    cell_key        VARCHAR NOT NULL,     -- hash of the configuration, equal across runs
    order_index     INTEGER,              -- position in the shuffled execution order
    model_name      VARCHAR NOT NULL,
    model_source    VARCHAR,              -- registry | grid | checkpoint | hub
    n_layer         INTEGER NOT NULL,
    n_embd          INTEGER NOT NULL,
    n_head          INTEGER NOT NULL,
    n_inner         INTEGER NOT NULL,
    vocab_size      INTEGER NOT NULL,
    n_positions     INTEGER NOT NULL,
    params          BIGINT,               -- counted from the built model, tied weights once
    backend         VARCHAR NOT NULL,
    backend_options JSON,                 -- e.g. {"mode": "default"} for torch-compile
    device          VARCHAR NOT NULL,     -- cuda | cpu
    dtype           VARCHAR NOT NULL,     -- float32 | bfloat16 | float16
    batch_size      INTEGER NOT NULL,
    prompt_len      INTEGER NOT NULL,
    gen_len         INTEGER NOT NULL,
    status          VARCHAR NOT NULL,     -- ok | failed | unsupported
    error           VARCHAR,
    setup_s         DOUBLE,               -- build + compile/capture, never in the phases
    cold_ms         DOUBLE,               -- first prefill after setup
    warmup_iters    INTEGER,
    warmup_s        DOUBLE,
    warmup_converged BOOLEAN,
    measured_s      DOUBLE,
    check_s         DOUBLE,               -- correctness gate, after the timed phases
    flags           VARCHAR[],            -- integrity flags, empty when clean
    correctness     JSON,                 -- gate details vs the hf-eager reference
    telemetry       JSON,                 -- nvml before/after (GPU only)
    profile         JSON,                 -- kernel/operator counts of one prefill and decode step
    started_at      TIMESTAMP,
    finished_at     TIMESTAMP,
    -- Memory and energy (runner.trackers; NULL: unknown, never 0). Bytes from the shape:
    weight_bytes    BIGINT,               -- params x dtype bytes
    kv_cache_bytes  BIGINT,               -- 2 x n_layer x n_kv_head x head_dim x (prompt_len + gen_len) x batch x dtype bytes
    -- Largest peak over the phases (each phase's own peaks, per round, are in resources):
    peak_allocated_bytes BIGINT,          -- torch.cuda.max_memory_allocated (GPU, torch-allocated backends)
    peak_reserved_bytes  BIGINT,          -- torch.cuda.max_memory_reserved
    peak_rss_bytes  BIGINT,               -- the measuring process's peak resident set
    energy_source   VARCHAR,              -- nvml | rapl; NULL: no readable energy counter
    resources       JSON,                 -- per phase: peaks, and energy_j / energy_s / calls per round
    family          VARCHAR DEFAULT 'gpt2', -- architecture: gpt2 | llama | qwen2 (vocabulary.FAMILIES)
    n_kv_head       INTEGER,              -- key/value heads (grouped-query attention); n_head for gpt2
    -- Rounds (runner.rounds; NULL: not recorded, cells before schema 5):
    rounds_used     INTEGER,              -- rounds the cell was measured in
    decode_half_width DOUBLE,             -- relative half-width of the decode median's 95% t interval across them
    precision_reached BOOLEAN,            -- [measure] precision: reached; NULL in a plan of fixed rounds
    stop_reason     VARCHAR               -- precision | max_rounds | budget (vocabulary.STOP_REASONS); NULL: fixed rounds
);

-- Raw samples: one row per timed region.
CREATE TABLE IF NOT EXISTS samples (
    cell_id    VARCHAR NOT NULL,
    phase      VARCHAR NOT NULL,   -- prefill | decode | e2e
    rep        INTEGER NOT NULL,   -- repetition index within the cell
    step       INTEGER NOT NULL,   -- decode step (0-based); 0 for prefill and e2e
    latency_ms DOUBLE NOT NULL,
    timer      VARCHAR NOT NULL,   -- cuda_event | perf_counter_ns
    round      INTEGER,            -- protocol 2: the round of the cell this sample belongs to (NULL: protocol 1)
    worker     INTEGER             -- protocol 2: pid of the process that measured the round
);

-- Derived results kept per data version (store.kept): computed after an ingest, read by the
-- dashboard's first visit instead of recomputing. A cache of the rows above, not data: it is
-- never exported as a table, and any row may be dropped (it is computed again).
CREATE TABLE IF NOT EXISTS derived_results (
    key          VARCHAR PRIMARY KEY,  -- hash of content_id, code_version, name, filters, args
    name         VARCHAR NOT NULL,
    content_id   VARCHAR NOT NULL,     -- the rows it was computed from (analysis.load.content_id)
    code_version VARCHAR NOT NULL,     -- the code that computed it (dashboard.results.code_version)
    filters      VARCHAR NOT NULL,     -- JSON
    args         VARCHAR NOT NULL,     -- JSON
    document     VARCHAR NOT NULL,     -- JSON; {"$frame": i} stands for frames[i]
    frames       BLOB[]                -- Parquet, one per DataFrame in the document
);

-- Columns added after schema version 1, for stores made before them (no-ops otherwise).
-- store.schema.ADDED_COLUMNS is read from these lines.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS protocol_version INTEGER;
ALTER TABLE samples ADD COLUMN IF NOT EXISTS round INTEGER;
ALTER TABLE samples ADD COLUMN IF NOT EXISTS worker INTEGER;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS weight_bytes BIGINT;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS kv_cache_bytes BIGINT;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS peak_allocated_bytes BIGINT;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS peak_reserved_bytes BIGINT;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS peak_rss_bytes BIGINT;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS energy_source VARCHAR;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS resources JSON;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS family VARCHAR DEFAULT 'gpt2';
ALTER TABLE cells ADD COLUMN IF NOT EXISTS n_kv_head INTEGER;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS rounds_used INTEGER;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS decode_half_width DOUBLE;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS precision_reached BOOLEAN;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS stop_reason VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS machine_load JSON;
-- (a store upgraded from before schema 4 gets n_kv_head = n_head: store.schema.init_schema)
