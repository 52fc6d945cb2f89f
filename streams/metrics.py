"""Prometheus metrics of a worker process (served by ``ratewarden worker --metrics-port``)."""

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["LAG", "EVENTS_IN", "DECISIONS", "DEAD_LETTERS", "FLUSHES", "FLUSH_SECONDS", "COUNTERS", "ASSIGNED", "RESTORED", "REPLIES_REFUSED",
           "ANALYTICS_BAD_RECORDS", "ANALYTICS_FORCED", "ANALYTICS_LATE_EVENTS", "ANALYTICS_LATE_PARTIALS",
           "RLS_ANSWERS", "RLS_ASSIGNED", "RLS_COUNTERS", "RLS_HITS_IN", "LATE_BANS", "BAN_GATE_WAIT",
           "BAN_GATE_TIMEOUTS", "BAN_GATE_UNGATED"]

EVENTS_IN = Counter("ratewarden_events_in_total", "Request events consumed by the limiter")
LATE_EVENTS = Counter(
    "ratewarden_limiter_late_events_total",
    "Events older than the state the limiter still keeps (their window's counter may have expired)",
)
DECISIONS = Counter("ratewarden_decisions_total", "Decisions published", ["verdict"])
DEAD_LETTERS = Counter("ratewarden_dead_letters_total", "Malformed events sent to the dead-letter topic", ["reason"])
FLUSHES = Counter("ratewarden_flushes_total", "State flushes (changelog, RocksDB, offsets)")
FLUSH_SECONDS = Histogram("ratewarden_flush_seconds", "Duration of one state flush")
COUNTERS = Gauge("ratewarden_window_counters", "Live window counters held by this worker")
ASSIGNED = Gauge("ratewarden_assigned_partitions", "Input partitions assigned to this worker")
RESTORED = Counter("ratewarden_restored_records_total", "Changelog records applied while restoring state")
REPLIES_REFUSED = Counter(
    "ratewarden_replies_refused_total", "Requests whose reply stamp was refused (decided, but no routed reply)"
)
LAG = Gauge("ratewarden_consumer_lag", "Request events not yet consumed, per assigned partition", ["partition"])
ANALYTICS_FORCED = Counter(
    "ratewarden_analytics_forced_windows_total", "Analytics windows closed before every source closed them (idle sources)"
)
ANALYTICS_LATE_PARTIALS = Counter(
    "ratewarden_analytics_late_partials_total",
    "Partials that arrived after their window was reported: corrected (re-reported), duplicate, dropped",
    ["outcome"],
)
ANALYTICS_LATE_EVENTS = Counter(
    "ratewarden_analytics_late_events_total", "Decisions older than their partition's closed analytics windows"
)
ANALYTICS_BAD_RECORDS = Counter(
    "ratewarden_analytics_bad_records_total", "Records the analytics stages could not decode (skipped)", ["topic"]
)
RLS_HITS_IN = Counter("ratewarden_rls_hits_in_total", "Descriptor hits consumed by the rate limit service's counter")
RLS_ANSWERS = Counter("ratewarden_rls_answers_total", "Descriptor answers published", ["code"])
RLS_COUNTERS = Gauge("ratewarden_rls_counters", "Live descriptor counters held by this worker")
RLS_ASSIGNED = Gauge("ratewarden_rls_assigned_partitions", "rls-hits partitions assigned to this worker")
LATE_BANS = Counter(
    "ratewarden_late_bans_total", "Automatic bans for windows a ban horizon had already covered (corrected windows)"
)
BAN_GATE_WAIT = Histogram(
    "ratewarden_ban_gate_wait_seconds", "Limiter waits for the ban horizon (ban_timing=event_time)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
BAN_GATE_TIMEOUTS = Counter("ratewarden_ban_gate_timeouts_total", "Limiter waits for the ban horizon that timed out")
BAN_GATE_UNGATED = Counter(
    "ratewarden_ban_gate_ungated_events_total", "Events decided past the ban horizon after a wait timed out"
)
