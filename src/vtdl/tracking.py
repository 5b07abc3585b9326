"""The one place where vtdl talks to MLflow.

Every stage records its run through `start_run`, and the report rebuilds its tables from the store
alone through `find_runs` and `metric_history`. Where the store lives:

- `MLFLOW_TRACKING_URI`, default `sqlite:///mlflow.db` (relative to the working directory, which
  is the project root under Snakemake). MLflow 3 refuses the old `./mlruns` file store.
- Artifacts of a local sqlite store go to `mlartifacts/` next to the database file: MLflow's own
  default would be `./mlruns/<experiment id>` under whatever the working directory happens to be.
- Experiment `vtdl`, overridable by the `experiment` argument or `VTDL_EXPERIMENT`. It is marked
  as a model-training experiment (MLflow 3's UI then opens on its runs, not on GenAI traces)
  and carries a description.
- MLflow's usage telemetry is off unless the user turns it on (`MLFLOW_DISABLE_TELEMETRY=false`):
  jobs run on offline clusters and shared machines.

MLflow is imported lazily (it takes seconds), so modules that import this one stay fast to load.
The fluent `mlflow.start_run` API is not used: an explicit `MlflowClient` keeps no global
"active run" state, which makes resuming a run id and running several runs per process simple.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import logging
import os
import posixpath
import re
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "vtdl"
ARTIFACT_DIR_NAME = "mlartifacts"

# Limits of MLflow 3.x (mlflow/utils/validation.py), restated so that values are cut here, with
# a visible marker, instead of being rejected (or silently cut) deep inside MLflow.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_KEY_LENGTH = 250
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

# Standard tags set on every run; callers add dataset, backbone, method, seed, split, ...
TAG_STAGE = "stage"
TAG_GIT_COMMIT = "git_commit"
TAG_PARAMS_DIGEST = "params_digest"
TAG_RESUME_COUNT = "resume_count"
TAG_RESUME_OF = "resume_of"
# On a run that a killed attempt of the same job left RUNNING: the run that replaced it.
TAG_SUPERSEDED_BY = "superseded_by"
# What the MLflow 3 UI reads to open an experiment on its training runs, and its description.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": (
        "vtdl: self-supervised video representation learning (temporal triplets, TCA, MoCo "
        "queue). Pretraining runs (stage=pretrain) with their downstream runs (finetune, "
        "linear, retrieval) nested under them; scratch runs at the top level. Every table of "
        "`vtdl report` is rebuilt from these runs."
    ),
}
# Seconds between system-metric samples (CPU, memory, disk, GPU when present) of long jobs.
SYSTEM_METRICS_INTERVAL_S = 15.0
_RESERVED_TAGS = {
    TAG_STAGE,
    TAG_GIT_COMMIT,
    TAG_PARAMS_DIGEST,
    TAG_RESUME_COUNT,
    TAG_RESUME_OF,
    TAG_SUPERSEDED_BY,
}

# MLflow's rule for param, metric and tag names (POSIX), plus "must not look like another path".
_NAME_RE = re.compile(r"^[/\w.\- :]+$")

# Seconds between automatic flushes of buffered metrics, so the UI shows live curves.
DEFAULT_FLUSH_INTERVAL_S = 15.0

# Retries of a write that lost a race for the sqlite lock (MLflow already waits 20 s per try
# through `PRAGMA busy_timeout`; sqlite can still answer "locked" at once to avoid a deadlock).
_LOCK_RETRIES = 6
_LOCK_BACKOFF_S = 0.25


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------


def _truncate(value: str, limit: int) -> str:
    """Cut `value` to `limit` characters, ending in a marker with the full value's length and hash.

    The hash keeps two long values that share a prefix distinguishable after truncation.
    """
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]
    marker = f"...[truncated {len(value)} chars, sha256 {digest}]"
    return value[: limit - len(marker)] + marker


def _render_value(value: Any) -> str:
    """Render a leaf value as a string: strings unchanged, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return json.dumps(_jsonable(value), separators=(",", ":"), sort_keys=True, default=str)


def _jsonable(value: Any) -> Any:
    """Turn tuples, sets and paths into JSON-friendly values (sets sorted for stability)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _check_name(kind: str, name: str) -> None:
    """Raise VtdlError when MLflow would refuse `name` as a param, metric or tag key."""
    normalized = posixpath.normpath(name)
    if (
        not name
        or len(name) > MAX_KEY_LENGTH
        or not _NAME_RE.match(name)
        or normalized != name
        or name.startswith(("/", ".."))
        or name == "."
    ):
        raise VtdlError(
            f"{kind} key {name!r} cannot be logged to MLflow: keys have at most {MAX_KEY_LENGTH} "
            "characters from letters, digits, '_', '-', '.', ' ', ':' and '/' (not as a path "
            "that normalizes to another name)"
        )


def flatten_params(nested: Mapping[str, Any], sep: str = ".") -> dict[str, str]:
    """Flatten nested parameters into MLflow's flat string-to-string form.

    Nested mappings become `outer<sep>inner` keys; lists, numbers, booleans and None are rendered
    as compact JSON (`[1,2]`, `0.5`, `true`, `null`); an empty mapping is kept as `{}` so its key
    is not lost. Values longer than MLflow's limit are cut with a marker naming the full length
    and hash.

    Raises:
        VtdlError: a key MLflow cannot store, or two keys that flatten to the same name.
    """
    flat: dict[str, str] = {}

    def visit(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping) and node:
            for key, child in node.items():
                visit(f"{prefix}{sep}{key}" if prefix else str(key), child)
            return
        if not prefix:
            return
        if prefix in flat:
            raise VtdlError(f"parameter {prefix!r} appears twice after flattening nested keys")
        _check_name("parameter", prefix)
        rendered = "{}" if isinstance(node, Mapping) else _render_value(node)
        flat[prefix] = _truncate(rendered, MAX_PARAM_VALUE_LENGTH)

    visit("", nested)
    return flat


def params_digest(params: Mapping[str, Any]) -> str:
    """Short, stable sha256 (16 hex digits) of the canonical JSON form of `params`.

    Key order does not matter; tuples and lists are the same; anything JSON cannot represent
    is hashed by its `str()`.
    """
    canonical = json.dumps(
        _jsonable(params), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The commit checked out in `cwd` (default: working directory), or "unknown" outside git.

    The commit gets a "-dirty" suffix when tracked files have uncommitted changes (untracked
    files such as pipeline outputs do not count).
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if not commit:
        return "unknown"
    changes = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if changes else commit


# ----------------------------------------------------------------------------------------------
# Store and experiment
# ----------------------------------------------------------------------------------------------


def _quiet_mlflow() -> None:
    """Silence MLflow's progress bars, run-URL banners and INFO chatter; warnings still show.

    Environment defaults are only set when the user has not chosen otherwise.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("mlflow", "alembic"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def tracking_uri() -> str:
    """The tracking URI in effect: `MLFLOW_TRACKING_URI`, else the project-local sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def experiment_name(experiment: str | None = None) -> str:
    """The experiment in effect: the argument, else `VTDL_EXPERIMENT`, else "vtdl"."""
    return experiment or os.environ.get("VTDL_EXPERIMENT") or DEFAULT_EXPERIMENT


def redact(uri: str) -> str:
    """Hide a password in a database/server URI before it goes into a message."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _uri_error(reason: str) -> VtdlError:
    """One error naming MLFLOW_TRACKING_URI and its value (as the user set it) plus `reason`."""
    shown = redact(tracking_uri())
    source = (
        f"MLFLOW_TRACKING_URI={shown!r}"
        if os.environ.get("MLFLOW_TRACKING_URI")
        else f"MLFLOW_TRACKING_URI (unset; default {shown!r})"
    )
    return VtdlError(f"{source}: cannot use this MLflow tracking store: {reason}")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for in-memory databases)."""
    path = urllib.parse.urlsplit(uri).path
    # sqlite:///rel.db -> path "/rel.db" (relative); sqlite:////abs.db -> "//abs.db" (absolute).
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:":
        return None
    return Path(path)


# Columns of the MLflow store that hold artifact locations (table, column).
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
)


def make_store_portable(db: Path, root: Path) -> int:
    """Rewrite artifact locations under `root` as paths relative to it; return how many changed.

    Both plain paths and `file://` URIs are rewritten. Locations elsewhere (a tracking server,
    S3, another disk) are left alone: they already mean the same thing in every clone.
    """
    if not db.is_file():
        raise VtdlError(f"{db}: MLflow store not found (run the pipeline first)")
    prefixes = [f"{root.resolve()}/", f"file://{root.resolve()}/"]
    changed = 0
    con = sqlite3.connect(db)
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
        with con:
            for table, column in ARTIFACT_COLUMNS:
                if table not in tables:
                    continue
                for prefix in prefixes:
                    cursor = con.execute(
                        f"UPDATE {table} SET {column} = substr({column}, ?)"  # noqa: S608
                        f" WHERE substr({column}, 1, ?) = ?",
                        (len(prefix) + 1, len(prefix), prefix),
                    )
                    changed += cursor.rowcount
    except sqlite3.Error as err:
        raise VtdlError(f"{db}: cannot rewrite artifact locations: {err}") from err
    finally:
        con.close()
    return changed


def _check_reachable(uri: str) -> None:
    """Fail fast on a store MLflow would retry for minutes before giving up.

    sqlite: the file must be openable as a database (MLflow retries "unable to open" ~100 s).
    http(s): the server's port must accept a connection (MLflow retries with long back-off).
    """
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        path = sqlite_path(uri)
        if path is None:
            return
        if path.is_dir():
            raise _uri_error(f"{str(path)!r} is a directory, not a database file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
                conn.execute("PRAGMA schema_version").fetchone()
        except (OSError, sqlite3.Error) as err:
            raise _uri_error(f"{str(path)!r}: {err}") from err
    elif scheme in ("http", "https"):
        parts = urllib.parse.urlsplit(uri)
        port = parts.port or (443 if scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname or "localhost", port), timeout=10):
                pass
        except OSError as err:
            raise _uri_error(f"server not reachable: {err}") from err


def _absolute_uri(uri: str) -> str:
    """Pin a relative sqlite path to the current directory.

    MLflow caches one engine per URI string, so a relative `sqlite:///mlflow.db` would keep
    pointing at the first directory it was opened from.
    """
    if urllib.parse.urlsplit(uri).scheme.lower() != "sqlite":
        return uri
    path = sqlite_path(uri)
    if path is None or path.is_absolute():
        return uri
    _, sep, query = uri.partition("?")
    return f"sqlite:///{path.resolve()}{sep}{query}"  # "sqlite:///" + "/abs/..." = absolute


def _open_store() -> tuple[MlflowClient, str]:
    """The client for the tracking store in effect, and its URI with sqlite paths absolute."""
    uri = _absolute_uri(tracking_uri())
    return _client(uri), uri


@functools.lru_cache(maxsize=8)
def _client(uri: str) -> MlflowClient:
    """A client for `uri`, checked once per process: any failure is one VtdlError."""
    _quiet_mlflow()
    _check_reachable(uri)
    import sqlalchemy.exc
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        with _schema_lock(uri):
            db = sqlite_path(uri) if urllib.parse.urlsplit(uri).scheme.lower() == "sqlite" else None
            if db is not None and _schema_unfinished(db):
                _create_sqlite_store(db)
            client = MlflowClient(tracking_uri=uri)
            # Touch the store: the schema of a fresh database is created here.
            client.search_experiments(max_results=1)
    except (
        MlflowException, OSError, ImportError, sqlite3.Error, sqlalchemy.exc.SQLAlchemyError
    ) as err:  # fmt: skip
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _uri_error(first_line) from err
    return client


def _schema_unfinished(db: Path) -> bool:
    """True when MLflow would create the schema of `db`: a missing or empty file, or one whose
    creation was killed part-way (some of MLflow's tables missing) before it held any run.

    MLflow's check is the same table list (`_all_tables_exist`); a store that already holds runs
    is left to MLflow whatever its tables are (that is its upgrade path, not a lost creation).
    """
    import mlflow.store.tracking.dbmodels.models  # noqa: F401  (fills Base.metadata)
    from mlflow.store.db.base_sql_model import Base

    if not db.exists():
        return True
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        tables = {row[0] for row in conn.execute(query)}
        if set(Base.metadata.tables) <= tables:
            return False
        return "runs" not in tables or conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is None


def _create_sqlite_store(db: Path) -> None:
    """Create MLflow's schema in a temporary file beside `db` and rename it onto `db`.

    MLflow creates and migrates a new database in place, in many statements that are not one
    transaction (alembic's sqlite migrations copy tables through `_alembic_tmp_*` ones): a job
    killed during it leaves a store that every later run refuses ("table _alembic_tmp_experiments
    already exists"). Built aside and renamed, the store is either absent or whole.
    """
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    log.info("creating the MLflow store %s", db)
    for leftover in db.parent.glob(f".{glob.escape(db.name)}.*.tmp*"):  # a creation killed
        leftover.unlink(missing_ok=True)  # earlier, its journal too (under the schema lock)
    with atomic_path(db) as partial:
        engine = create_sqlalchemy_engine(f"sqlite:///{partial.resolve()}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """Hold a machine-wide lock while MLflow opens a sqlite store for the first time.

    MLflow 3.17's tracking store creates and migrates the schema of a fresh database without a
    lock, so two jobs starting together on a new `mlflow.db` fail with errors such as
    "duplicate column name: step". The lock file lives in the system temp dir (like MLflow's
    own lock for the model registry), not in the project.
    """
    if urllib.parse.urlsplit(uri).scheme.lower() != "sqlite":
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent first use stays MLflow's problem
        yield
        return
    key = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"vtdl-mlflow-schema-{key}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _default_artifact_location(uri: str) -> str | None:
    """`mlartifacts/` next to a sqlite database; None (the server decides) for other stores."""
    if urllib.parse.urlsplit(uri).scheme.lower() != "sqlite":
        return None
    path = sqlite_path(uri)
    if path is None:
        return None
    return str(path.resolve().parent / ARTIFACT_DIR_NAME)


def _is_lock_error(err: BaseException) -> bool:
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text


def _is_duplicate_key(err: BaseException) -> bool:
    text = str(err).lower()
    return "unique constraint" in text or "duplicate key" in text


def _retry(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call `fn`, retrying a few times when sqlite reports a lost race for its lock."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    for attempt in range(_LOCK_RETRIES + 1):
        try:
            return fn(*args, **kwargs)
        except (MlflowException, sqlalchemy.exc.OperationalError) as err:
            if attempt == _LOCK_RETRIES or not _is_lock_error(err):
                raise
            log.warning("MLflow store busy (%s); retrying", str(err).splitlines()[0][:200])
            time.sleep(_LOCK_BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")


def _experiment_id(client: MlflowClient, uri: str, name: str, create: bool) -> str | None:
    """The id of experiment `name`, created (with the project-local artifact root) if asked."""
    from mlflow.exceptions import MlflowException

    experiment = _retry(client.get_experiment_by_name, name)
    if experiment is None and create:
        try:
            return _retry(
                client.create_experiment,
                name,
                artifact_location=_default_artifact_location(uri),
                tags=EXPERIMENT_TAGS,
            )
        except MlflowException as err:
            # Another job created it between our look-up and our create: use theirs.
            experiment = _retry(client.get_experiment_by_name, name)
            if experiment is None:
                raise _uri_error(f"cannot create experiment {name!r}: {err}") from err
    if experiment is None:
        return None
    if experiment.lifecycle_stage != "active":
        raise VtdlError(
            f"MLflow experiment {name!r} is deleted in {redact(uri)!r}: restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or set "
            "VTDL_EXPERIMENT to another name"
        )
    if create:  # a store made by an older vtdl: mark it too (the user's own tags are kept)
        for key, value in EXPERIMENT_TAGS.items():
            if key not in experiment.tags:
                _retry(client.set_experiment_tag, experiment.experiment_id, key, value)
    return experiment.experiment_id


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


class Run:
    """An open MLflow run: buffered metric logging, params, tags and artifacts.

    Metrics are buffered and written with `log_batch` (at most 1000 per call) when the buffer
    is full, every `flush_interval_s` seconds, on `flush()`, and when the run ends. Call
    `flush()` right after saving a checkpoint so every metric up to the checkpoint is stored.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        experiment_id: str,
        artifact_uri: str,
        resumed: bool,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    ) -> None:
        self._client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.artifact_uri = artifact_uri
        self.resumed = resumed
        self._flush_interval_s = flush_interval_s
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self._checked_keys: set[str] = set()  # metric names already validated
        self.ended = False  # set when `start_run`'s block is left; later metrics would be lost

    # -- metrics -------------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Buffer `metrics` (name -> number, e.g. 0-d tensors) at training step `step`.

        Steps are explicit so a resumed run's curves continue where the checkpoint left off.
        """
        from mlflow.entities import Metric

        if self.ended:
            raise RuntimeError(f"MLflow run {self.run_id} has ended; metrics cannot be logged")
        if isinstance(step, bool) or int(step) != step:
            raise ValueError(f"metric step must be an integer, got {step!r}")
        timestamp = int(time.time() * 1000)
        for key, value in metrics.items():
            if key not in self._checked_keys:
                _check_name("metric", key)
                self._checked_keys.add(key)
            self._buffer.append(Metric(key, float(value), timestamp, int(step)))
        if (
            len(self._buffer) >= MAX_METRICS_PER_BATCH
            or time.monotonic() - self._last_flush >= self._flush_interval_s
        ):
            self.flush()

    def log_metric(self, key: str, value: Any, step: int) -> None:
        """Buffer one metric value at `step` (see `log_metrics`)."""
        self.log_metrics({key: value}, step)

    def flush(self) -> None:
        """Write every buffered metric to the store now."""
        while self._buffer:
            batch = self._buffer[:MAX_METRICS_PER_BATCH]
            _retry(self._client.log_batch, self.run_id, metrics=batch, synchronous=True)
            # Drop only what was written, so a failed flush loses nothing still buffered.
            del self._buffer[: len(batch)]
        self._last_flush = time.monotonic()

    # -- params and tags -----------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) parameters, flattened; re-logging the same value is a no-op.

        Raises:
            VtdlError: a parameter already logged in this run with a different value.
        """
        _log_params(self._client, self.run_id, flatten_params(params))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set (or overwrite) tags; None values are skipped, others become strings."""
        from mlflow.entities import RunTag

        entries = [RunTag(k, v) for k, v in _render_tags(tags).items()]
        for start in range(0, len(entries), MAX_PARAMS_PER_BATCH):
            chunk = entries[start : start + MAX_PARAMS_PER_BATCH]
            _retry(self._client.log_batch, self.run_id, tags=chunk, synchronous=True)

    # -- artifacts -----------------------------------------------------------------------------

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a file, or a directory's contents, into the run's artifacts (at artifact_path)."""
        path = Path(path)
        if path.is_dir():
            local = urllib.parse.urlsplit(self.artifact_uri)
            if local.scheme in ("", "file") and Path(local.path).resolve().is_relative_to(
                path.resolve()
            ):
                # Copying a folder into itself recurses until the path is too long.
                raise ValueError(f"{str(path)!r} contains this run's artifact folder")
            _retry(self._client.log_artifacts, self.run_id, str(path), artifact_path)
        else:
            _retry(self._client.log_artifact, self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store `text` as the artifact file `artifact_file` (e.g. "config/params.yaml")."""
        _retry(self._client.log_text, self.run_id, text, artifact_file)

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """Store a dict as JSON or YAML, chosen by the extension of `artifact_file`."""
        _retry(self._client.log_dict, self.run_id, dict(obj), artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Store a matplotlib figure as an image artifact (format from the file extension)."""
        _retry(self._client.log_figure, self.run_id, figure, artifact_file)

    # -- inputs --------------------------------------------------------------------------------

    def log_dataset(self, name: str, path: str | os.PathLike, sha256: str, context: str) -> None:
        """Record the list a run read as an MLflow dataset input (nothing is copied).

        `name` e.g. "synth_hmdb/split1/train", `path` the list file, `sha256` its checksum (the
        digest, shortened as MLflow shows it), `context` "training" or "evaluation". Logging the
        same list again (a resumed run) adds nothing.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name,
            digest=sha256[:16],
            source_type="local",
            source=json.dumps({"uri": str(path)}),
        )
        entry = DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])
        from mlflow.exceptions import MlflowException

        try:
            _retry(self._client.log_inputs, self.run_id, datasets=[entry])
        except MlflowException as err:
            if not _is_duplicate_key(err):
                raise
            # Two jobs logged the same list at once: the other inserted its dataset row between
            # this call's look-up and insert (seen on a tracking server on PostgreSQL). The row
            # exists now, so the second call links it to this run.
            _retry(self._client.log_inputs, self.run_id, datasets=[entry])


class SilentRun:
    """What a data-parallel rank other than 0 logs to: nothing (rank 0 logs the job's one run).
    It takes every `Run` call and does nothing; `run_id` is empty."""

    run_id = ""
    resumed = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not callable(getattr(Run, name, None)):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def _render_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    rendered = {}
    for key, value in tags.items():
        if value is None:
            continue
        _check_name("tag", str(key))
        rendered[str(key)] = _truncate(_render_value(value), MAX_TAG_VALUE_LENGTH)
    return rendered


def _log_params(client: MlflowClient, run_id: str, flat: Mapping[str, str]) -> None:
    """Log flat params in batches; keep those already logged, refuse changed values."""
    from mlflow.entities import Param

    existing = _retry(client.get_run, run_id).data.params
    changed = {k: (existing[k], v) for k, v in flat.items() if k in existing and existing[k] != v}
    if changed:
        details = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
        raise VtdlError(
            f"MLflow run {run_id} already has different values for {len(changed)} parameter(s) "
            f"(an MLflow parameter cannot change; start a new run instead): {details[:2000]}"
        )
    new = [Param(k, v) for k, v in flat.items() if k not in existing]
    for start in range(0, len(new), MAX_PARAMS_PER_BATCH):
        chunk = new[start : start + MAX_PARAMS_PER_BATCH]
        _retry(client.log_batch, run_id, params=chunk, synchronous=True)


def _standard_tags(stage: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> dict:
    clash = _RESERVED_TAGS.intersection(tags)
    if clash:
        raise ValueError(f"tags {sorted(clash)} are set by vtdl.tracking itself")
    commit = git_commit()
    standard = {
        TAG_STAGE: stage,
        TAG_GIT_COMMIT: commit,
        TAG_PARAMS_DIGEST: params_digest(params),
        # MLflow's own tags, so the UI shows the source and commit in its usual places.
        "mlflow.source.name": f"vtdl {stage}",
        "mlflow.source.type": "LOCAL",
    }
    if commit != "unknown":
        standard["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    return {**standard, **tags}


def _system_metrics_monitor(run_id: str, uri: str, resumed: bool) -> Any:
    """MLflow's system-metrics monitor on `run_id`, started (a resumed run continues its steps)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id,
        sampling_interval=SYSTEM_METRICS_INTERVAL_S,
        resume_logging=resumed,
        tracking_uri=uri,
    )
    monitor.start()
    return monitor


def _reopen(client: MlflowClient, resume_run_id: str) -> Any | None:
    """The existing, not deleted run `resume_run_id`, or None (with a warning) when it is gone."""
    from mlflow.exceptions import MlflowException

    try:
        run = _retry(client.get_run, resume_run_id)
    except MlflowException as err:
        log.warning(
            "cannot resume MLflow run %s (%s); starting a new run",
            resume_run_id,
            str(err).splitlines()[0],
        )
        return None
    if run.info.lifecycle_stage != "active":
        log.warning("MLflow run %s is deleted; starting a new run", resume_run_id)
        return None
    return run


def claim_path(output: str | os.PathLike) -> Path:
    """Where the job writing `output` keeps the id of its open MLflow run (hidden, beside it)."""
    output = Path(output)
    return output.parent / f".{output.name}.mlflow-run"


def _claimed_run(claim: Path) -> str | None:
    """The run id an earlier attempt of this job left in `claim`, if it left a readable one."""
    try:
        run_id = claim.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        log.warning("ignoring %s: %s", claim, err)
        return None
    return run_id if re.fullmatch(r"[0-9a-f]{32}", run_id) else None


def _end_abandoned(client: MlflowClient, run_id: str, successor: str) -> None:
    """Mark `run_id`, left RUNNING by a killed attempt of the same job, KILLED (its metrics stay
    browsable); a run that ended, was deleted or is not in this store is left alone."""
    from mlflow.entities import RunStatus
    from mlflow.exceptions import MlflowException

    try:
        run = _retry(client.get_run, run_id)
    except MlflowException:
        return
    if run.info.lifecycle_stage != "active" or run.info.status != "RUNNING":
        return
    _retry(client.set_tag, run_id, TAG_SUPERSEDED_BY, successor)
    _retry(client.set_terminated, run_id, status=RunStatus.to_string(RunStatus.KILLED))
    log.warning("MLflow run %s was left RUNNING by a killed attempt: marked KILLED", run_id)


@contextlib.contextmanager
def start_run(
    stage: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    run_name: str | None = None,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
    experiment: str | None = None,
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    system_metrics: bool = False,
    enabled: bool = True,
    claim: Path | None = None,
) -> Iterator[Run]:
    """Open an MLflow run for one stage job and close it when the block ends.

    The run is tagged with stage, git commit and params digest plus the caller's `tags`
    (dataset, backbone, method, seed, split, ...; None values skipped) and gets all `params`
    flattened (see `flatten_params`). It ends FINISHED when the block succeeds, KILLED on
    KeyboardInterrupt/SystemExit, FAILED on any other exception (re-raised); buffered metrics
    are flushed first in every case.

    Args:
        stage: pipeline stage, e.g. "pretrain".
        params: the job's (nested) parameters.
        tags: the caller's tags.
        run_name: display name; MLflow makes one up when None.
        parent_run_id: makes this a nested run under that run in the UI.
        resume_run_id: a run id stored in a checkpoint: that run is re-opened and continued
            (a new run is started, with a warning and tag `resume_of`, if the store no longer
            has it). Its parameters must not have changed.
        experiment: experiment name (default `VTDL_EXPERIMENT` or "vtdl").
        flush_interval_s: at most this many seconds between writes of buffered metrics.
        system_metrics: sample CPU, memory, disk and GPU use every
            `SYSTEM_METRICS_INTERVAL_S` (or `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`) seconds
            into `system/...` metrics, as MLflow's own monitor does (for long jobs).
        enabled: False yields a `SilentRun` and touches no store (data-parallel ranks but 0).
        claim: a file (`claim_path` of the job's output) holding the open run's id while the
            block runs, removed when the run ends. A SIGKILL skips every `finally`: the next
            attempt of the job finds the file and marks the run it names, still RUNNING,
            KILLED (tag `superseded_by`), unless it is the run being resumed.

    Raises:
        VtdlError: unusable tracking store, deleted experiment, or changed parameters on resume.
    """
    if not enabled:
        yield SilentRun()  # type: ignore[misc]
        return
    from mlflow.entities import RunStatus

    client, uri = _open_store()
    experiment_id = _experiment_id(client, uri, experiment_name(experiment), create=True)
    flat = flatten_params(params)
    all_tags = _standard_tags(stage, params, tags)

    existing = _reopen(client, resume_run_id) if resume_run_id else None
    if existing is not None:
        info = existing.info
        all_tags[TAG_RESUME_COUNT] = int(existing.data.tags.get(TAG_RESUME_COUNT, "0")) + 1
        # Checked before re-opening, so a refused resume leaves the stored run untouched.
        _log_params(client, info.run_id, flat)
        _retry(client.update_run, info.run_id, status="RUNNING")
    else:
        create_tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
        if resume_run_id:
            create_tags[TAG_RESUME_OF] = resume_run_id
        info = _retry(client.create_run, experiment_id, tags=create_tags, run_name=run_name).info
    run_id = info.run_id
    run = Run(
        client,
        run_id,
        info.experiment_id,
        info.artifact_uri,
        resumed=existing is not None,
        flush_interval_s=flush_interval_s,
    )

    status = RunStatus.to_string(RunStatus.FINISHED)
    monitor = None
    claimed = False
    try:
        if existing is None:
            _log_params(client, run_id, flat)
        run.set_tags(all_tags)
        # Inside the try: a claim that cannot be written ends this run FAILED, not RUNNING.
        if claim is not None:
            abandoned = _claimed_run(claim)
            if abandoned is not None and abandoned != run_id:
                _end_abandoned(client, abandoned, run_id)
            atomic_write_text(claim, run_id + "\n")
            claimed = True
        if system_metrics:
            monitor = _system_metrics_monitor(run_id, uri, resumed=existing is not None)
        yield run
    except (KeyboardInterrupt, SystemExit):
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    except BaseException:
        status = RunStatus.to_string(RunStatus.FAILED)
        raise
    finally:
        if monitor is not None:
            monitor.finish()
        try:
            run.flush()
        except Exception:
            # The run's own outcome matters more than a failed last flush: record it, keep going.
            log.exception("could not write the last metrics of MLflow run %s", run_id)
            status = RunStatus.to_string(RunStatus.FAILED)
        run.ended = True
        _retry(client.set_terminated, run_id, status=status)
        if claimed:
            claim.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Reading the store back
# ----------------------------------------------------------------------------------------------


def find_runs(filter: str | None = None, experiment: str | None = None) -> list[dict[str, Any]]:
    """Every (not deleted) run of the experiment matching an MLflow filter, oldest first.

    Each run is a dict with run_id, run_name, status, experiment_id, start_time, end_time (ms),
    artifact_uri, params, metrics (latest value per key) and tags. `filter` uses MLflow's search
    syntax, e.g. "tags.stage = 'pretrain' and attributes.status = 'FINISHED'" (a key that is an
    SQL word or has dots needs backticks: "tags.`case` = 'a'"). An experiment that does not
    exist has no runs.

    Raises:
        VtdlError: unusable tracking store or an invalid filter.
    """
    from mlflow.exceptions import MlflowException

    client, uri = _open_store()
    experiment_id = _experiment_id(client, uri, experiment_name(experiment), create=False)
    if experiment_id is None:
        return []
    found: list[dict[str, Any]] = []
    token = None
    while True:
        try:
            page = _retry(
                client.search_runs,
                [experiment_id],
                filter_string=filter or "",
                max_results=1000,
                order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
                page_token=token,
            )
        except MlflowException as err:
            raise VtdlError(f"MLflow run filter {filter!r}: {str(err).splitlines()[0]}") from err
        found.extend(_run_dict(run) for run in page)
        token = page.token
        if not token:
            return found


def _run_dict(run: Any) -> dict[str, Any]:
    info = run.info
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "status": info.status,
        "experiment_id": info.experiment_id,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "artifact_uri": info.artifact_uri,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in run.data.tags.items()},
    }


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """The curve of metric `key` in run `run_id`: (step, value) sorted by step.

    A step logged more than once (a resumed job repeats the steps between its last checkpoint
    and the kill) keeps the value logged last. NaN values come back as NaN.
    """
    client, _ = _open_store()
    latest: dict[int, tuple[int, float]] = {}
    for metric in _retry(client.get_metric_history, run_id, key):
        seen = latest.get(metric.step)
        if seen is None or metric.timestamp >= seen[0]:
            latest[metric.step] = (metric.timestamp, float(metric.value))
    return [(step, value) for step, (_, value) in sorted(latest.items())]


__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "Run",
    "experiment_name",
    "find_runs",
    "flatten_params",
    "git_commit",
    "metric_history",
    "params_digest",
    "start_run",
    "tracking_uri",
]


def download_artifact(artifact_uri: str, name: str, into: Path) -> Path | None:
    """Download artifact `name` of the run at `artifact_uri` into `into`; None if it has none."""
    from mlflow.artifacts import download_artifacts, list_artifacts

    names = {Path(info.path).name for info in list_artifacts(artifact_uri=artifact_uri)}
    if name not in names:
        return None
    return Path(download_artifacts(artifact_uri=f"{artifact_uri}/{name}", dst_path=str(into)))


def ui_url(server: str, experiment: str | None = None) -> str:
    """Where to open the MLflow UI at `server` on the experiment's runs.

    MLflow 3's UI starts in its GenAI mode (traces, "No data available") whatever the
    experiment's kind, unless the URL asks for the model-training view; an experiment that
    does not exist yet gets the experiment list in that view.
    """
    view = "?workflowType=machine_learning"
    try:
        client, uri = _open_store()
        experiment_id = _experiment_id(client, uri, experiment_name(experiment), create=False)
    except VtdlError:
        experiment_id = None
    if experiment_id is None:
        return f"{server}/#/experiments{view}"
    return f"{server}/#/experiments/{experiment_id}{view}"
