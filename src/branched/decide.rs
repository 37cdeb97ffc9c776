//! Merge's three-way decisions as pure functions: per table (dropped,
//! created, schema) and per key (base, ours, theirs, policy). No I/O, no
//! locks, no logging: [`merge`](crate::branched::BranchedBackend::merge)
//! reads the sides, asks these functions what to do, and applies the
//! answers. The unit tests below are the decision table.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};

use crate::branched::catalog::TableRef;
use crate::branched::changes::{RowChange, changed_columns, column_differs, same_row};
use crate::branched::report::{ConflictKind, ConflictPolicy};

/// What to do to the target for one key.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Append this row.
    Insert(RecordBatch),
    /// Set these columns of the row with this row's key to its values.
    Update(RecordBatch, Vec<String>),
    /// Delete the target's row with this key; the stable row id of the
    /// source's base row, when the target row should be that row.
    Delete(RecordBatch, Option<u64>),
    /// The target row equals the source's base row: replace it whole
    /// (delete + append), which costs what changed even without Lance's
    /// indexed merge_insert path. The base row's stable row id, if known,
    /// finds the target row without a lookup by key.
    Replace(RecordBatch, Option<u64>),
}

/// Which merge statistic an action counts towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    Inserted,
    Updated,
    Deleted,
}

impl Action {
    /// The statistic this action counts towards.
    pub(crate) fn counted(&self) -> Counted {
        match self {
            Action::Insert(_) => Counted::Inserted,
            Action::Update(..) | Action::Replace(..) => Counted::Updated,
            Action::Delete(..) => Counted::Deleted,
        }
    }
}

/// What the target holds for a key the source changed and the target did
/// not.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The two sides have different bases (siblings with different fork
    /// points): the target's row, read by key (`None`: it has none).
    Read(Option<&'a RecordBatch>),
    /// Same base: the target row is the source's base row. `whole`: the
    /// source carries every target column, so the row may be replaced
    /// whole; `base_id` is the base row's stable row id, if known.
    SourceBase { whole: bool, base_id: Option<u64> },
}

/// The decision for one key: an action on the target, a conflict (its kind
/// and the first clashing column), or both (a conflict resolved by
/// [`ConflictPolicy::Theirs`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyDecision {
    pub action: Option<Action>,
    pub conflict: Option<(ConflictKind, Option<String>)>,
}

/// Decide one key: `theirs` is the source's change, `ours` the target's
/// change of the same key if it made one, `target` what the target holds
/// when it did not.
pub(crate) fn decide_key(
    theirs: &RowChange,
    ours: Option<&RowChange>,
    target: Target<'_>,
    policy: ConflictPolicy,
) -> KeyDecision {
    let action = |a: Option<Action>| KeyDecision {
        action: a,
        conflict: None,
    };
    let Some(ours) = ours else {
        return action(match target {
            Target::Read(row) => take(theirs, row, None),
            Target::SourceBase { whole, base_id } => match (&theirs.base, &theirs.cur) {
                (Some(_), Some(c)) if whole => Some(Action::Replace(c.clone(), base_id)),
                (Some(b), Some(c)) => Some(Action::Update(c.clone(), changed_columns(b, c))),
                _ => take(theirs, theirs.base.as_ref(), base_id),
            },
        });
    };
    let conflict = |kind, column: Option<String>, a: Option<Action>| KeyDecision {
        action: a.filter(|_| policy == ConflictPolicy::Theirs),
        conflict: Some((kind, column)),
    };
    match (&ours.cur, &theirs.cur) {
        (None, None) => action(None),
        (Some(o), Some(c)) if same_row(o, c) => action(None),
        (Some(o), Some(c)) => both_updated(theirs, ours, (o, c), policy),
        (Some(_), None) => conflict(
            ConflictKind::UpdateDelete,
            None,
            take(theirs, ours.cur.as_ref(), None),
        ),
        (None, Some(_)) => conflict(ConflictKind::DeleteUpdate, None, take(theirs, None, None)),
    }
}

/// Both sides hold a row for the key, different ones: merge column by
/// column. A column changed on both sides to different values (or any
/// differing column of a row inserted on both sides) clashes; the source's
/// other changed columns are taken.
fn both_updated(
    theirs: &RowChange,
    ours: &RowChange,
    (o, c): (&RecordBatch, &RecordBatch),
    policy: ConflictPolicy,
) -> KeyDecision {
    let kind = if theirs.base.is_none() && ours.base.is_none() {
        ConflictKind::DivergentInsert
    } else {
        ConflictKind::DivergentUpdate
    };
    let theirs_changed = match &theirs.base {
        Some(b) => changed_columns(b, c),
        None => changed_columns(o, c),
    };
    let mut clash = None;
    let mut take_cols = Vec::new();
    for col in theirs_changed {
        if !column_differs(o, c, &col) {
            continue;
        }
        let ours_changed = match &ours.base {
            Some(b) => column_differs(b, o, &col),
            None => true,
        };
        if ours_changed || kind == ConflictKind::DivergentInsert {
            clash.get_or_insert(col.clone());
        }
        take_cols.push(col);
    }
    let update = (!take_cols.is_empty()).then(|| Action::Update(c.clone(), take_cols));
    match clash {
        None => KeyDecision {
            action: update,
            conflict: None,
        },
        Some(col) => KeyDecision {
            action: update.filter(|_| policy == ConflictPolicy::Theirs),
            conflict: Some((kind, Some(col))),
        },
    }
}

/// Take the source's change against the target row `ours_cur`.
fn take(
    theirs: &RowChange,
    ours_cur: Option<&RecordBatch>,
    base_id: Option<u64>,
) -> Option<Action> {
    match (&theirs.cur, ours_cur) {
        (Some(c), None) => Some(Action::Insert(c.clone())),
        (Some(c), Some(o)) => {
            let cols = changed_columns(o, c);
            (!cols.is_empty()).then(|| Action::Update(c.clone(), cols))
        }
        (None, Some(o)) => Some(Action::Delete(o.clone(), base_id)),
        (None, None) => None,
    }
}

/// The decision for a whole table, from the refs of both sides (base and
/// current; `None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TableDecision {
    /// Nothing to do (the target keeps its table, or its absence).
    Keep,
    /// Drop the table on the target.
    Drop,
    /// Create the table on the target as the source has it.
    Create,
    /// A table-level conflict, with why.
    Conflict(&'static str),
    /// Both sides hold the table: merge rows.
    Rows,
}

/// Decide a table the source changed: `(tb, tc)` the target's base and
/// current ref, `(sb, sc)` the source's.
pub(crate) fn decide_table(
    (tb, tc): (Option<&TableRef>, Option<&TableRef>),
    (_sb, sc): (Option<&TableRef>, Option<&TableRef>),
    policy: ConflictPolicy,
) -> TableDecision {
    match (tc, sc) {
        (None, None) => TableDecision::Keep,
        // Dropped on the source.
        (Some(_), None) if tb == tc || policy == ConflictPolicy::Theirs => TableDecision::Drop,
        (Some(_), None) if policy == ConflictPolicy::Fail => {
            TableDecision::Conflict("dropped on the source, changed here")
        }
        (Some(_), None) => TableDecision::Keep,
        // Absent here: new on the source, or dropped here and changed there.
        (None, Some(_)) if tb.is_none() || policy == ConflictPolicy::Theirs => {
            TableDecision::Create
        }
        (None, Some(_)) if policy == ConflictPolicy::Fail => {
            TableDecision::Conflict("dropped here, changed on the source")
        }
        (None, Some(_)) => TableDecision::Keep,
        (Some(_), Some(_)) => TableDecision::Rows,
    }
}

/// The schema change the source brings to the target: `Ok(None)` for
/// none, `Ok(Some(columns))` for new nullable columns to add, `Err(why)`
/// for anything else (a changed type, a new non-nullable column), which is
/// a table-level conflict.
pub(crate) fn schema_change(
    target: &Schema,
    source: &Schema,
) -> std::result::Result<Option<SchemaRef>, String> {
    let mut added = Vec::new();
    for f in source.fields() {
        match target.field_with_name(f.name()) {
            Ok(tf) if tf.data_type().equals_datatype(f.data_type()) => {}
            Ok(_) => return Err(format!("column {:?} changed type", f.name())),
            Err(_) if f.is_nullable() => added.push(f.as_ref().clone()),
            Err(_) => return Err(format!("non-nullable column {:?} added", f.name())),
        }
    }
    Ok((!added.is_empty()).then(|| Arc::new(Schema::new(added))))
}

#[cfg(test)]
mod tests {
    //! The decision table. Rows are `(id, a, b)`; `r(id, a, b)` is one row.

    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;
    use crate::branched::report::ConflictKind::*;
    use crate::branched::report::ConflictPolicy::{Fail, Ours, Theirs};

    fn r(id: i64, a: i64, b: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ]));
        let col = |v| Arc::new(Int64Array::from(vec![v])) as _;
        RecordBatch::try_new(schema, vec![col(id), col(a), col(b)]).unwrap()
    }

    fn ch(base: Option<RecordBatch>, cur: Option<RecordBatch>) -> RowChange {
        RowChange { base, cur }
    }

    /// An action as `(kind, the row's (a, b), columns)`.
    type Shape = (&'static str, Option<(i64, i64)>, Vec<String>);

    /// The action of `d` as a [`Shape`], for comparison.
    fn shape(d: &KeyDecision) -> Option<Shape> {
        let ab = |row: &RecordBatch| {
            let v = |i: usize| {
                row.column(i)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(0)
            };
            Some((v(1), v(2)))
        };
        d.action.as_ref().map(|a| match a {
            Action::Insert(row) => ("insert", ab(row), vec![]),
            Action::Update(row, cols) => ("update", ab(row), cols.clone()),
            Action::Delete(row, _) => ("delete", ab(row), vec![]),
            Action::Replace(row, _) => ("replace", ab(row), vec![]),
        })
    }

    fn cols(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    const SAME_BASE: Target<'static> = Target::SourceBase {
        whole: true,
        base_id: Some(7),
    };

    #[test]
    fn only_the_source_changed_the_key() {
        let base = r(1, 10, 20);
        // Inserted there: inserted here.
        let d = decide_key(&ch(None, Some(r(1, 1, 2))), None, SAME_BASE, Fail);
        assert_eq!(shape(&d), Some(("insert", Some((1, 2)), vec![])));
        // Updated there, same base, every column carried: replaced whole.
        let d = decide_key(
            &ch(Some(base.clone()), Some(r(1, 11, 20))),
            None,
            SAME_BASE,
            Fail,
        );
        assert_eq!(shape(&d), Some(("replace", Some((11, 20)), vec![])));
        // The same without every target column: an update of what changed.
        let partial = Target::SourceBase {
            whole: false,
            base_id: None,
        };
        let d = decide_key(
            &ch(Some(base.clone()), Some(r(1, 11, 20))),
            None,
            partial,
            Fail,
        );
        assert_eq!(shape(&d), Some(("update", Some((11, 20)), cols(&["a"]))));
        // Deleted there: the target's row (the base row) deleted by its id.
        let d = decide_key(&ch(Some(base.clone()), None), None, SAME_BASE, Fail);
        assert!(matches!(d.action, Some(Action::Delete(_, Some(7)))));
        assert!(d.conflict.is_none());
    }

    #[test]
    fn only_the_source_changed_the_key_from_another_base() {
        // Siblings: the target's row was read by key.
        let here = r(1, 5, 20);
        let d = decide_key(
            &ch(Some(r(1, 10, 20)), Some(r(1, 10, 21))),
            None,
            Target::Read(Some(&here)),
            Fail,
        );
        // Against the row the target holds, not the source's base.
        assert_eq!(
            shape(&d),
            Some(("update", Some((10, 21)), cols(&["a", "b"])))
        );
        // Absent here: inserted.
        let d = decide_key(
            &ch(Some(r(1, 10, 20)), Some(r(1, 10, 21))),
            None,
            Target::Read(None),
            Fail,
        );
        assert_eq!(shape(&d), Some(("insert", Some((10, 21)), vec![])));
        // Deleted there, absent here: nothing.
        let d = decide_key(
            &ch(Some(r(1, 10, 20)), None),
            None,
            Target::Read(None),
            Fail,
        );
        assert!(d.action.is_none() && d.conflict.is_none());
        // Deleted there, present here: deleted by key (no row id).
        let d = decide_key(
            &ch(Some(r(1, 10, 20)), None),
            None,
            Target::Read(Some(&here)),
            Fail,
        );
        assert!(matches!(d.action, Some(Action::Delete(_, None))));
    }

    #[test]
    fn both_sides_made_the_same_change() {
        for policy in [Fail, Ours, Theirs] {
            let b = Some(r(1, 10, 20));
            let same = decide_key(
                &ch(b.clone(), Some(r(1, 11, 20))),
                Some(&ch(b.clone(), Some(r(1, 11, 20)))),
                SAME_BASE,
                policy,
            );
            assert!(same.action.is_none() && same.conflict.is_none());
            let both_deleted =
                decide_key(&ch(b.clone(), None), Some(&ch(b, None)), SAME_BASE, policy);
            assert!(both_deleted.action.is_none() && both_deleted.conflict.is_none());
        }
    }

    #[test]
    fn different_columns_merge_without_conflict() {
        for policy in [Fail, Ours, Theirs] {
            let b = Some(r(1, 10, 20));
            // Ours changed a, theirs changed b: take b.
            let d = decide_key(
                &ch(b.clone(), Some(r(1, 10, 21))),
                Some(&ch(b, Some(r(1, 11, 20)))),
                SAME_BASE,
                policy,
            );
            assert!(d.conflict.is_none());
            assert_eq!(shape(&d), Some(("update", Some((10, 21)), cols(&["b"]))));
        }
    }

    #[test]
    fn the_same_column_changed_differently_conflicts() {
        let b = Some(r(1, 10, 20));
        let theirs = ch(b.clone(), Some(r(1, 12, 21)));
        let ours = ch(b, Some(r(1, 11, 20)));
        let d = decide_key(&theirs, Some(&ours), SAME_BASE, Fail);
        assert_eq!(d.conflict, Some((DivergentUpdate, Some("a".into()))));
        assert!(d.action.is_none());
        let d = decide_key(&theirs, Some(&ours), SAME_BASE, Ours);
        assert_eq!(d.conflict, Some((DivergentUpdate, Some("a".into()))));
        assert!(d.action.is_none(), "ours keeps the target's row");
        let d = decide_key(&theirs, Some(&ours), SAME_BASE, Theirs);
        assert_eq!(d.conflict, Some((DivergentUpdate, Some("a".into()))));
        // Theirs takes every column the source changed, the clash included.
        assert_eq!(
            shape(&d),
            Some(("update", Some((12, 21)), cols(&["a", "b"])))
        );
    }

    #[test]
    fn the_same_key_inserted_differently_conflicts() {
        let theirs = ch(None, Some(r(1, 1, 2)));
        let ours = ch(None, Some(r(1, 1, 3)));
        let d = decide_key(&theirs, Some(&ours), SAME_BASE, Fail);
        assert_eq!(d.conflict, Some((DivergentInsert, Some("b".into()))));
        assert!(d.action.is_none());
        let d = decide_key(&theirs, Some(&ours), SAME_BASE, Theirs);
        assert_eq!(shape(&d), Some(("update", Some((1, 2)), cols(&["b"]))));
    }

    #[test]
    fn update_against_delete_conflicts_both_ways() {
        let b = Some(r(1, 10, 20));
        // Ours updated, theirs deleted.
        let (theirs, ours) = (ch(b.clone(), None), ch(b.clone(), Some(r(1, 11, 20))));
        for (policy, deleted) in [(Fail, false), (Ours, false), (Theirs, true)] {
            let d = decide_key(&theirs, Some(&ours), SAME_BASE, policy);
            assert_eq!(d.conflict, Some((UpdateDelete, None)));
            assert_eq!(matches!(d.action, Some(Action::Delete(_, None))), deleted);
        }
        // Ours deleted, theirs updated.
        let (theirs, ours) = (ch(b.clone(), Some(r(1, 12, 20))), ch(b, None));
        for (policy, inserted) in [(Fail, false), (Ours, false), (Theirs, true)] {
            let d = decide_key(&theirs, Some(&ours), SAME_BASE, policy);
            assert_eq!(d.conflict, Some((DeleteUpdate, None)));
            assert_eq!(shape(&d).map(|s| s.0) == Some("insert"), inserted);
        }
    }

    #[test]
    fn tables_dropped_created_or_changed() {
        let t = |v| TableRef {
            line: None,
            version: v,
        };
        let (a, b) = (t(1), t(2));
        use TableDecision::*;
        let cases = [
            // (target base, target now, source now, policy) → decision
            ((Some(&a), Some(&a), None), Fail, Drop),
            (
                (Some(&a), Some(&b), None),
                Fail,
                Conflict("dropped on the source, changed here"),
            ),
            ((Some(&a), Some(&b), None), Ours, Keep),
            ((Some(&a), Some(&b), None), Theirs, Drop),
            ((None, None, None), Fail, Keep),
            ((None, None, Some(&b)), Fail, Create),
            (
                (Some(&a), None, Some(&b)),
                Fail,
                Conflict("dropped here, changed on the source"),
            ),
            ((Some(&a), None, Some(&b)), Ours, Keep),
            ((Some(&a), None, Some(&b)), Theirs, Create),
            ((Some(&a), Some(&a), Some(&b)), Fail, Rows),
        ];
        for ((tb, tc, sc), policy, want) in cases {
            assert_eq!(
                decide_table((tb, tc), (Some(&a), sc), policy),
                want,
                "{tb:?} {tc:?} {sc:?} {policy:?}"
            );
        }
    }

    #[test]
    fn schemas_may_only_gain_nullable_columns() {
        let f = |n: &str, t: DataType, null| Field::new(n, t, null);
        let target = Schema::new(vec![f("id", DataType::Int64, false)]);
        assert_eq!(schema_change(&target, &target), Ok(None));
        let added = Schema::new(vec![
            f("id", DataType::Int64, false),
            f("x", DataType::Utf8, true),
        ]);
        let got = schema_change(&target, &added).unwrap().unwrap();
        assert_eq!(got.fields().len(), 1);
        assert_eq!(got.field(0).name(), "x");
        let required = Schema::new(vec![
            f("id", DataType::Int64, false),
            f("x", DataType::Utf8, false),
        ]);
        assert_eq!(
            schema_change(&target, &required),
            Err("non-nullable column \"x\" added".into())
        );
        let retyped = Schema::new(vec![f("id", DataType::Utf8, false)]);
        assert_eq!(
            schema_change(&target, &retyped),
            Err("column \"id\" changed type".into())
        );
    }
}
