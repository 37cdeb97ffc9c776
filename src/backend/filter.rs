//! Typed filters that render to Lance SQL with every literal escaped.
//!
//! A [`FilterExpr`] is built from column names and values, never by pasting
//! user text into SQL. "Match every row" is a variant of its own
//! ([`FilterExpr::All`]); a raw SQL fragment can only enter through
//! [`FilterExpr::sql`], which refuses an empty or blank string, so a blank
//! user input can never silently widen a delete or a search to the whole
//! table.

use serde::{Deserialize, Serialize};

use crate::backend::error::Error;

/// A literal value in a filter.
///
/// # Example
/// ```
/// use lancebranch::Literal;
/// assert_eq!(Literal::from("it's").to_sql(), "'it''s'");
/// assert_eq!(Literal::from(3_i64).to_sql(), "3");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Literal {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string, quoted and escaped when rendered.
    Str(String),
}

impl Literal {
    /// The literal as Lance SQL.
    pub fn to_sql(&self) -> String {
        match self {
            Literal::Null => "NULL".to_string(),
            Literal::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
            Literal::Int(i) => i.to_string(),
            Literal::Float(f) if f.is_finite() => {
                let s = format!("{f:?}");
                if s.contains(['.', 'e', 'E']) {
                    s
                } else {
                    format!("{s}.0")
                }
            }
            Literal::Float(f) => {
                let word = if f.is_nan() {
                    "NaN"
                } else if *f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                format!("CAST('{word}' AS DOUBLE)")
            }
            Literal::Str(s) => format!("'{}'", s.replace('\'', "''")),
        }
    }
}

impl From<&str> for Literal {
    fn from(s: &str) -> Self {
        Literal::Str(s.to_string())
    }
}
impl From<String> for Literal {
    fn from(s: String) -> Self {
        Literal::Str(s)
    }
}
impl From<i64> for Literal {
    fn from(i: i64) -> Self {
        Literal::Int(i)
    }
}
impl From<i32> for Literal {
    fn from(i: i32) -> Self {
        Literal::Int(i64::from(i))
    }
}
impl From<u32> for Literal {
    fn from(i: u32) -> Self {
        Literal::Int(i64::from(i))
    }
}
impl From<f64> for Literal {
    fn from(f: f64) -> Self {
        Literal::Float(f)
    }
}
impl From<bool> for Literal {
    fn from(b: bool) -> Self {
        Literal::Bool(b)
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A row filter.
///
/// # Example
/// ```
/// use lancebranch::FilterExpr;
/// let f = FilterExpr::eq("city", "Zürich").and(FilterExpr::gt("age", 30_i64));
/// assert_eq!(f.to_sql().unwrap(), "(city = 'Zürich') AND (age > 30)");
/// assert_eq!(FilterExpr::All.to_sql(), None);
/// assert!(FilterExpr::sql("   ").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum FilterExpr {
    /// Every row.
    #[default]
    All,
    /// `column <op> value`.
    Compare {
        /// The column.
        column: String,
        /// The operator.
        op: CmpOp,
        /// The value.
        value: Literal,
    },
    /// `column IN (values…)`; an empty list matches nothing.
    In {
        /// The column.
        column: String,
        /// The values.
        values: Vec<Literal>,
    },
    /// `column IS NULL`.
    IsNull(String),
    /// `column IS NOT NULL`.
    IsNotNull(String),
    /// Every sub-filter holds (an empty list matches every row).
    And(Vec<FilterExpr>),
    /// Some sub-filter holds (an empty list matches nothing).
    Or(Vec<FilterExpr>),
    /// The sub-filter does not hold.
    Not(Box<FilterExpr>),
    /// A raw SQL predicate, known to be non-blank (see [`FilterExpr::sql`]).
    Sql(String),
}

impl FilterExpr {
    /// A raw SQL predicate. Refuses an empty or blank string ("match all" is
    /// [`FilterExpr::All`], never an empty string) and anything that is not
    /// exactly one SQL expression: Lance reads a filter's first expression
    /// and ignores the rest, so `"1=1; DROP TABLE t"` would match every row.
    ///
    /// # Errors
    /// [`Error::InvalidFilter`] for a blank string, a string that does not
    /// parse, or text after the expression.
    pub fn sql(sql: impl Into<String>) -> Result<Self, Error> {
        let sql = sql.into();
        if sql.trim().is_empty() {
            return Err(Error::InvalidFilter {
                filter: sql,
                detail: "a blank filter is refused; use FilterExpr::All to match every row".into(),
            });
        }
        if let Err(detail) = one_expression(&sql) {
            return Err(Error::InvalidFilter {
                filter: sql,
                detail,
            });
        }
        Ok(FilterExpr::Sql(sql))
    }

    fn cmp(column: &str, op: CmpOp, value: impl Into<Literal>) -> Self {
        FilterExpr::Compare {
            column: column.to_string(),
            op,
            value: value.into(),
        }
    }

    /// `column = value`.
    pub fn eq(column: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(column, CmpOp::Eq, value)
    }
    /// `column <> value`.
    pub fn ne(column: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(column, CmpOp::Ne, value)
    }
    /// `column < value`.
    pub fn lt(column: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(column, CmpOp::Lt, value)
    }
    /// `column <= value`.
    pub fn le(column: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(column, CmpOp::Le, value)
    }
    /// `column > value`.
    pub fn gt(column: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(column, CmpOp::Gt, value)
    }
    /// `column >= value`.
    pub fn ge(column: &str, value: impl Into<Literal>) -> Self {
        Self::cmp(column, CmpOp::Ge, value)
    }
    /// `column IN (values…)`.
    pub fn is_in<L: Into<Literal>>(column: &str, values: impl IntoIterator<Item = L>) -> Self {
        FilterExpr::In {
            column: column.to_string(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
    /// Both this and `other` hold.
    pub fn and(self, other: FilterExpr) -> Self {
        FilterExpr::And(vec![self, other])
    }
    /// This or `other` holds.
    pub fn or(self, other: FilterExpr) -> Self {
        FilterExpr::Or(vec![self, other])
    }
    /// Negation.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        FilterExpr::Not(Box::new(self))
    }

    /// Whether this filter matches every row without looking at any.
    pub fn is_all(&self) -> bool {
        match self {
            FilterExpr::All => true,
            FilterExpr::And(parts) => parts.iter().all(FilterExpr::is_all),
            _ => false,
        }
    }

    /// The filter as a Lance SQL predicate; `None` when it matches every row.
    pub fn to_sql(&self) -> Option<String> {
        if self.is_all() {
            return None;
        }
        Some(self.render())
    }

    fn render(&self) -> String {
        match self {
            FilterExpr::All => "TRUE".to_string(),
            FilterExpr::Compare { column, op, value } => match value {
                Literal::Null if *op == CmpOp::Eq => format!("{} IS NULL", ident(column)),
                Literal::Null if *op == CmpOp::Ne => format!("{} IS NOT NULL", ident(column)),
                _ => format!("{} {} {}", ident(column), op.sql(), value.to_sql()),
            },
            FilterExpr::In { column, values } => {
                if values.is_empty() {
                    "FALSE".to_string()
                } else {
                    let list: Vec<String> = values.iter().map(Literal::to_sql).collect();
                    format!("{} IN ({})", ident(column), list.join(", "))
                }
            }
            FilterExpr::IsNull(c) => format!("{} IS NULL", ident(c)),
            FilterExpr::IsNotNull(c) => format!("{} IS NOT NULL", ident(c)),
            FilterExpr::And(parts) => join(parts, "AND", "TRUE"),
            FilterExpr::Or(parts) => join(parts, "OR", "FALSE"),
            FilterExpr::Not(inner) => format!("NOT ({})", inner.render()),
            FilterExpr::Sql(s) => s.clone(),
        }
    }
}

fn join(parts: &[FilterExpr], op: &str, empty: &str) -> String {
    let live: Vec<String> = parts
        .iter()
        .filter(|p| !(op == "AND" && p.is_all()))
        .map(|p| format!("({})", p.render()))
        .collect();
    if live.is_empty() {
        empty.to_string()
    } else {
        live.join(&format!(" {op} "))
    }
}

/// A column name as a SQL identifier: bare when it is a plain identifier,
/// otherwise back-quoted with inner back-quotes doubled.
fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("`{}`", name.replace('`', "``"))
    }
}

/// The SQL dialect Lance parses filters with: generic SQL, identifiers
/// quoted with back-quotes only.
#[derive(Debug)]
struct LanceSql(sqlparser::dialect::GenericDialect);

impl sqlparser::dialect::Dialect for LanceSql {
    fn dialect(&self) -> std::any::TypeId {
        self.0.dialect()
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`'
    }
    fn supports_bitwise_shift_operators(&self) -> bool {
        self.0.supports_bitwise_shift_operators()
    }
}

/// Whether `sql` is exactly one SQL expression, tokenized as Lance does
/// (`==` read as `=`): the reason when it is not.
fn one_expression(sql: &str) -> Result<(), String> {
    use sqlparser::parser::Parser;
    use sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = LanceSql(sqlparser::dialect::GenericDialect {});
    let raw = Tokenizer::new(&dialect, sql)
        .tokenize()
        .map_err(|e| format!("cannot read it as SQL: {e}"))?;
    let mut tokens: Vec<Token> = Vec::with_capacity(raw.len());
    for t in raw {
        if t == Token::Eq && tokens.last() == Some(&Token::Eq) {
            continue;
        }
        tokens.push(t);
    }
    let mut parser = Parser::new(&dialect).with_tokens(tokens);
    parser
        .parse_expr()
        .map_err(|e| format!("not a SQL expression: {e}"))?;
    match parser.peek_token().token {
        Token::EOF => Ok(()),
        t => Err(format!(
            "text after the expression (from {t}) is refused: a filter is one expression"
        )),
    }
}

/// Check a raw filter string handed to the contract (`count_rows`,
/// `delete_rows`, [`ScanRequest::filter`](crate::ScanRequest)): a blank
/// string is refused instead of being read as "all rows", and so is
/// anything but exactly one expression.
///
/// # Errors
/// [`Error::InvalidFilter`] for a blank string or not one expression.
///
/// # Example
/// ```
/// use lancebranch::backend::check_raw_filter;
/// assert!(check_raw_filter("id = 3").is_ok());
/// assert!(check_raw_filter(" ").is_err());
/// assert!(check_raw_filter("1=1; DROP TABLE people").is_err());
/// ```
pub fn check_raw_filter(filter: &str) -> Result<(), Error> {
    FilterExpr::sql(filter).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_quotes() {
        let f = FilterExpr::eq("weird col", "a'b").or(FilterExpr::is_in("k", [1_i64, 2]));
        assert_eq!(
            f.to_sql().unwrap(),
            "(`weird col` = 'a''b') OR (k IN (1, 2))"
        );
        assert_eq!(FilterExpr::eq("x`y", 1.5).to_sql().unwrap(), "`x``y` = 1.5");
        assert_eq!(
            FilterExpr::eq("x", Literal::Null).to_sql().unwrap(),
            "x IS NULL"
        );
        assert_eq!(FilterExpr::is_in::<i64>("x", []).to_sql().unwrap(), "FALSE");
        assert_eq!(FilterExpr::Or(vec![]).to_sql().unwrap(), "FALSE");
        assert_eq!(FilterExpr::And(vec![]).to_sql(), None);
        assert_eq!(
            FilterExpr::All
                .and(FilterExpr::gt("a", 1_i64))
                .to_sql()
                .unwrap(),
            "(a > 1)"
        );
        assert_eq!(Literal::Float(2.0).to_sql(), "2.0");
        assert_eq!(
            FilterExpr::All.not().to_sql().unwrap(),
            "NOT (TRUE)",
            "negated match-all matches nothing"
        );
    }

    #[test]
    fn blank_sql_refused() {
        for s in ["", " ", "\n\t"] {
            assert!(FilterExpr::sql(s).is_err());
        }
    }

    #[test]
    fn exactly_one_expression() {
        for ok in [
            "id = 3",
            "id == 3",
            "a > 1 AND (b < 2 OR c IS NULL)",
            "name LIKE 'x%' -- a comment",
            "`weird col` IN (1, 2)",
            "NOT flag",
        ] {
            assert!(check_raw_filter(ok).is_ok(), "{ok}");
        }
        for bad in [
            "1=1; DROP TABLE people",
            "1=1;",
            "id = 1 ORDER BY id",
            "id = 1 LIMIT 0",
            "id = 1 GROUP BY id",
            "id = 1 UNION SELECT 1",
            "id = 1)",
            "id = 1 id = 2",
            "id = 'unterminated",
            "id =",
            "SELECT 1",
        ] {
            let e = check_raw_filter(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidFilter { .. }), "{bad}: {e}");
        }
    }
}
