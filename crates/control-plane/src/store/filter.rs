//! The filters the audit lists share (operations, administrative changes,
//! security events): who, on whom, when, and what happened. Each list
//! applies the fields it has columns for.

use super::Arg;

/// Which rows of an audit list to return: every field that is set must
/// match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Who acted (compared without regard to ASCII case).
    pub principal: Option<String>,
    /// On whom: a target key as stored (`upn:<lowercase UPN>` or
    /// `guid:<canonical GUID>`).
    pub target: Option<String>,
    /// At or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// Before this time (Unix milliseconds).
    pub until_ms: Option<i64>,
    /// The row's kind: an operation's kind (`reset`…), an administrative
    /// action (`token.create`…), a security event's kind.
    pub kind: Option<String>,
    /// An operation's state (`pending`, `succeeded`, `failed`).
    pub state: Option<String>,
    /// The reason code recorded.
    pub reason_code: Option<String>,
}

/// The columns of one list that the filter's fields map to; `None` where
/// the list has no such column (the field is then ignored).
pub(super) struct FilterColumns {
    pub at: &'static str,
    pub principal: Option<&'static str>,
    pub target: Option<&'static str>,
    pub kind: Option<&'static str>,
    pub state: Option<&'static str>,
    pub reason_code: Option<&'static str>,
}

impl AuditFilter {
    /// Appends ` AND …` conditions for the set fields to `sql`, their values
    /// to `args` (placeholders numbered after the arguments already there).
    pub(super) fn push_conditions(
        &self,
        sql: &mut String,
        args: &mut Vec<Arg>,
        columns: FilterColumns,
    ) {
        let mut text = |column: Option<&str>, value: &Option<String>, lower: bool| {
            if let (Some(column), Some(value)) = (column, value) {
                if lower {
                    args.push(Arg::Text(value.trim().to_ascii_lowercase()));
                    sql.push_str(&format!(" AND LOWER({column}) = ${}", args.len()));
                } else {
                    args.push(Arg::Text(value.clone()));
                    sql.push_str(&format!(" AND {column} = ${}", args.len()));
                }
            }
        };
        text(columns.principal, &self.principal, true);
        text(columns.target, &self.target, false);
        text(columns.kind, &self.kind, false);
        text(columns.state, &self.state, false);
        text(columns.reason_code, &self.reason_code, false);
        if let Some(since) = self.since_ms {
            args.push(Arg::Int(since));
            sql.push_str(&format!(" AND {} >= ${}", columns.at, args.len()));
        }
        if let Some(until) = self.until_ms {
            args.push(Arg::Int(until));
            sql.push_str(&format!(" AND {} < ${}", columns.at, args.len()));
        }
    }
}
