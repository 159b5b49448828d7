//! A worker awake to a workflow's new runs spares their enqueues the announcement.
//!
//! Every enqueue used to announce its run (`NOTIFY`), and an announcement is dear:
//! the server serializes every notifying commit on one lock, held through the
//! commit's flush to disk, and wakes every listening connection of the database.
//! While runs stream in, the worker that claims them looks again after each round
//! anyway; their announcements only cost. So such a worker stays *awake*: it holds
//! a session lock per workflow (the awake lock), and an enqueue of a run of that
//! workflow that finds the lock taken does not announce its run.
//!
//! The awake worker promises to look again after every run whose enqueue found it
//! awake, and the look must come after that enqueue's commit, which it cannot see
//! coming. So every enqueue also holds a second lock of its workflow (the enqueue
//! lock), shared, from before it checks for an awake worker to its commit. A worker
//! that stops being awake first lets its awake locks go (enqueues from then on
//! announce), then tries the enqueue locks exclusively, without waiting. Once that
//! succeeds, every enqueue that found it awake has committed, and the look that
//! follows sees its run. Until then it still owes that look, and tries again at a
//! short pace. It never waits for the enqueue lock: a producer paused inside its
//! transaction would otherwise queue every other enqueue of the workflow behind
//! the worker's request.
//!
//! A worker that stalls while awake (a paused process keeps its session, and so its
//! lock) would leave new runs unannounced for as long as it stalls. So a worker that
//! wakes says so (a notification, once), and a worker that opens a connection asks
//! whether one is awake: while another worker is awake to its workflows, a worker
//! looks for runs at least once a second, whatever its poll interval, until it hears
//! a run of them announced (then nobody was awake to it).
//!
//! The keys are the hashes of the schema and of the workflow's name, in the two-key
//! space apart from most applications' own advisory locks. Two workflows whose
//! hashes meet share the locks: a run of one may then wait for a worker's look at
//! its pace instead of being announced, which costs time, not a run.

/// The two keys (SQL text, each an `integer`) of `lock` (`awake` or `enqueue`) for
/// the workflow named by `workflow` (SQL text: a parameter or a column) in `schema`.
fn keys(schema: &str, lock: &str, workflow: &str) -> String {
    format!("hashtext('cano-{lock}:{schema}'), hashtext({workflow})")
}

/// Whether an enqueue of a run of `workflow` (SQL text) must announce it: no worker
/// is awake to its workflow. Takes the workflow's enqueue lock, shared, until the
/// transaction ends, before it looks (`CASE` keeps that order). It looks by taking
/// the awake lock shared and letting it go at once, so that enqueues never hold it
/// and a worker can always become awake between two of them.
pub(crate) fn must_announce(schema: &str, workflow: &str) -> String {
    let (enqueue, awake) = (
        keys(schema, "enqueue", workflow),
        keys(schema, "awake", workflow),
    );
    format!(
        "CASE WHEN pg_advisory_xact_lock_shared({enqueue}) IS NULL THEN true
              WHEN pg_try_advisory_lock_shared({awake}) THEN pg_advisory_unlock_shared({awake})
              ELSE false END"
    )
}

/// The start of a worker's notice that it woke; the workflow's name follows (the
/// statement in `wake` writes it as SQL).
const NOTICE: &str = "awake\n";

/// The workflow a notification on the channel of new runs says a worker woke to,
/// if it is such a notice (else it announces runs: its payload is their workflow).
pub(crate) fn woke_to(payload: &str) -> Option<&str> {
    payload.strip_prefix(NOTICE)
}

/// Takes the awake lock of each workflow of `$1` (text[]) that no other worker
/// holds, for this session, and says so on the channel of new runs (`ready`); says
/// which it took.
pub(crate) fn wake(schema: &str, ready: &str) -> String {
    format!(
        "WITH taken AS (SELECT w FROM unnest($1::text[]) w WHERE pg_try_advisory_lock({keys})),
              told AS (SELECT pg_notify('{ready}', 'awake' || chr(10) || w) FROM taken)
         SELECT coalesce((SELECT array_agg(w ORDER BY w) FROM taken), '{{}}'),
             (SELECT count(*) FROM told)",
        keys = keys(schema, "awake", "w"),
    )
}

/// Whether another session is awake to a workflow of `$1` (text[]): it looks as an
/// enqueue does, taking each awake lock shared and letting it go at once.
pub(crate) fn watched(schema: &str) -> String {
    let awake = keys(schema, "awake", "w");
    format!(
        "SELECT coalesce(bool_or(CASE WHEN pg_try_advisory_lock_shared({awake})
                                     THEN NOT pg_advisory_unlock_shared({awake}) ELSE true END), false)
         FROM unnest($1::text[]) w"
    )
}

/// Lets go of this session's awake locks of the workflows of `$1` (text[]).
pub(crate) fn doze(schema: &str) -> String {
    format!(
        "SELECT count(*) FROM unnest($1::text[]) w WHERE pg_advisory_unlock({})",
        keys(schema, "awake", "w")
    )
}

/// Whether no enqueue of a run of the workflows of `$1` (text[]) is under way: it
/// tries each enqueue lock exclusively, without waiting, and lets them go with the
/// statement. (Every try is made: `bool_and` reads every row.)
pub(crate) fn settle(schema: &str) -> String {
    format!(
        "SELECT coalesce(bool_and(pg_try_advisory_xact_lock({})), true) FROM unnest($1::text[]) w",
        keys(schema, "enqueue", "w")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enqueue_and_awake_locks_have_keys_of_their_own_per_schema() {
        let a = must_announce("s1", "$2");
        assert!(a.contains("hashtext('cano-enqueue:s1'), hashtext($2)"));
        assert!(a.contains("hashtext('cano-awake:s1'), hashtext($2)"));
        // The shared enqueue lock comes first: a worker settling must find every
        // enqueue that looked at its awake lock.
        assert!(a.find("cano-enqueue").unwrap() < a.find("cano-awake").unwrap());
        assert!(wake("s2", "ready").contains("'cano-awake:s2'"));
        assert!(watched("s2").contains("'cano-awake:s2'"));
        assert_eq!(woke_to(&format!("{NOTICE}billing")), Some("billing"));
        assert_eq!(
            woke_to("billing"),
            None,
            "an announcement names its workflow"
        );
        assert!(doze("s2").contains("'cano-awake:s2'"));
        assert!(settle("s2").contains("'cano-enqueue:s2'"));
    }
}
