//! Check strings (the oslo.policy language): tokens, the parser, and the evaluation of one parsed check.
//!
//! ```text
//! check   := or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | "(" or ")" | atom
//! atom    := "@" | "!" | KIND ":" MATCH
//! ```
//!
//! `not` binds tighter than `and`, `and` tighter than `or`; keywords are case-insensitive. An empty check string
//! always passes. Atoms: `rule:NAME` (another rule), `role:NAME` (the caller has that role, case-insensitively),
//! and `ATTRIBUTE:MATCH` comparing one of the caller's attributes (`project_id`/`tenant`, `user_id`/`user`,
//! `is_admin`, `roles`) with a literal or a field of the target (`%(tenant)s`, `%(project_id)s`,
//! `%(user_id)s`).

use std::fmt;

/// A field of the target a check can name as `%(field)s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetField {
    /// `%(tenant)s` or `%(project_id)s`: the project that owns the resource.
    Project,
    /// `%(user_id)s`: the user that owns the resource (when the resource records one).
    User,
}

/// The right-hand side of an atom: a literal or a field of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Match {
    /// Compared as written.
    Literal(String),
    /// Replaced by the target's field; a target without it fails the atom.
    Target(TargetField),
}

/// One of the caller's attributes an atom can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attribute {
    /// `project_id`, `tenant`.
    Project,
    /// `user_id`, `user`.
    User,
    /// `roles` (any role equal to the match, exactly).
    Roles,
}

/// A parsed check string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// `@`, or an empty check string.
    Always,
    /// `!`.
    Never,
    /// `not X`.
    Not(Box<Check>),
    /// `X and Y ...`.
    All(Vec<Check>),
    /// `X or Y ...`.
    Any(Vec<Check>),
    /// `rule:NAME`.
    Rule(String),
    /// `role:NAME` (case-insensitive).
    Role(Match),
    /// `is_admin:True` / `is_admin:False`.
    IsAdmin(bool),
    /// `ATTRIBUTE:MATCH`.
    Attribute(Attribute, Match),
}

/// What is wrong with a check string, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// The offending token, or empty at the end of the string.
    pub token: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.token.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "'{}': {}", self.token, self.message)
        }
    }
}

/// The caller as checks see it.
#[derive(Debug, Clone)]
pub(crate) struct Credentials<'a> {
    pub project_id: &'a str,
    pub user_id: &'a str,
    pub roles: &'a [String],
    pub is_admin: bool,
}

/// The resource as checks see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TargetView<'a> {
    pub project_id: &'a str,
    pub user_id: Option<&'a str>,
}

impl<'a> TargetView<'a> {
    fn field(&self, f: TargetField) -> Option<&'a str> {
        match f {
            TargetField::Project => Some(self.project_id),
            TargetField::User => self.user_id,
        }
    }
}

impl Match {
    fn resolve<'t>(&'t self, target: &TargetView<'t>) -> Option<&'t str> {
        match self {
            Match::Literal(s) => Some(s),
            Match::Target(f) => target.field(*f),
        }
    }
}

impl Check {
    /// Evaluates the check; `rule` resolves `rule:NAME` (every name was verified when the policy was built).
    pub(crate) fn eval(
        &self,
        creds: &Credentials<'_>,
        target: &TargetView<'_>,
        rule: &dyn Fn(&str) -> bool,
    ) -> bool {
        match self {
            Check::Always => true,
            Check::Never => false,
            Check::Not(c) => !c.eval(creds, target, rule),
            Check::All(cs) => cs.iter().all(|c| c.eval(creds, target, rule)),
            Check::Any(cs) => cs.iter().any(|c| c.eval(creds, target, rule)),
            Check::Rule(name) => rule(name),
            Check::Role(m) => m
                .resolve(target)
                .is_some_and(|want| creds.roles.iter().any(|r| r.eq_ignore_ascii_case(want))),
            Check::IsAdmin(want) => creds.is_admin == *want,
            Check::Attribute(a, m) => m.resolve(target).is_some_and(|want| match a {
                Attribute::Project => creds.project_id == want,
                Attribute::User => creds.user_id == want,
                Attribute::Roles => creds.roles.iter().any(|r| r == want),
            }),
        }
    }

    /// Every `rule:NAME` this check refers to.
    pub(crate) fn references<'s>(&'s self, out: &mut Vec<&'s str>) {
        match self {
            Check::Not(c) => c.references(out),
            Check::All(cs) | Check::Any(cs) => cs.iter().for_each(|c| c.references(out)),
            Check::Rule(name) => out.push(name),
            Check::Always
            | Check::Never
            | Check::Role(_)
            | Check::IsAdmin(_)
            | Check::Attribute(_, _) => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Atom(String),
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        // Parentheses stick to the words they open or close: "(role:a" and "role:b))".
        let opening = word.len() - word.trim_start_matches('(').len();
        out.extend(std::iter::repeat_n(Token::Open, opening));
        let rest = &word[opening..];
        let inner = rest.trim_end_matches(')');
        let closing = rest.len() - inner.len();
        if !inner.is_empty() {
            out.push(match inner.to_ascii_lowercase().as_str() {
                "and" => Token::And,
                "or" => Token::Or,
                "not" => Token::Not,
                _ => Token::Atom(inner.to_string()),
            });
        }
        out.extend(std::iter::repeat_n(Token::Close, closing));
    }
    out
}

fn shown(t: &Token) -> String {
    match t {
        Token::Open => "(".into(),
        Token::Close => ")".into(),
        Token::And => "and".into(),
        Token::Or => "or".into(),
        Token::Not => "not".into(),
        Token::Atom(a) => a.clone(),
    }
}

fn err(token: impl Into<String>, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        token: token.into(),
        message: message.into(),
    }
}

/// The right-hand side of an atom: `%(field)s` or a literal.
fn parse_match(atom: &str, raw: &str) -> Result<Match, SyntaxError> {
    if !raw.contains("%(") {
        return Ok(Match::Literal(raw.to_string()));
    }
    let field = raw
        .strip_prefix("%(")
        .and_then(|r| r.strip_suffix(")s"))
        .ok_or_else(|| {
            err(
                atom,
                "a target field is written %(name)s and must be the whole value",
            )
        })?;
    match field {
        "tenant" | "project_id" => Ok(Match::Target(TargetField::Project)),
        "user_id" => Ok(Match::Target(TargetField::User)),
        other => Err(err(
            atom,
            format!("the target has no field '{other}' (known: tenant, project_id, user_id)"),
        )),
    }
}

fn parse_atom(atom: &str) -> Result<Check, SyntaxError> {
    match atom {
        "@" => return Ok(Check::Always),
        "!" => return Ok(Check::Never),
        _ => {}
    }
    let (kind, value) = atom.split_once(':').ok_or_else(|| {
        err(
            atom,
            "not a check: expected KIND:VALUE, @, !, and, or, not or parentheses",
        )
    })?;
    if value.is_empty() {
        return Err(err(atom, "nothing after ':'"));
    }
    match kind {
        "rule" => Ok(Check::Rule(value.to_string())),
        "role" => Ok(Check::Role(parse_match(atom, value)?)),
        "is_admin" => match value {
            "True" => Ok(Check::IsAdmin(true)),
            "False" => Ok(Check::IsAdmin(false)),
            _ => Err(err(atom, "is_admin compares with True or False")),
        },
        "project_id" | "tenant" => Ok(Check::Attribute(
            Attribute::Project,
            parse_match(atom, value)?,
        )),
        "user_id" | "user" => Ok(Check::Attribute(Attribute::User, parse_match(atom, value)?)),
        "roles" => Ok(Check::Attribute(
            Attribute::Roles,
            parse_match(atom, value)?,
        )),
        "http" | "https" => Err(err(atom, "remote (http) checks are not supported")),
        other => Err(err(
            atom,
            format!(
                "unknown check kind '{other}' (known: rule, role, project_id, tenant, user_id, user, \
                 is_admin, roles)"
            ),
        )),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn or(&mut self) -> Result<Check, SyntaxError> {
        let mut items = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Check::Any(items)
        })
    }

    fn and(&mut self) -> Result<Check, SyntaxError> {
        let mut items = vec![self.not()?];
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Check::All(items)
        })
    }

    fn not(&mut self) -> Result<Check, SyntaxError> {
        let token = self.peek().cloned();
        self.at += 1;
        match token {
            Some(Token::Not) => Ok(Check::Not(Box::new(self.not()?))),
            Some(Token::Open) => {
                let inner = self.or()?;
                match self.peek() {
                    Some(Token::Close) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    Some(t) => Err(err(shown(t), "expected 'and', 'or' or ')'")),
                    None => Err(err("", "a '(' is not closed")),
                }
            }
            Some(Token::Atom(a)) => parse_atom(&a),
            Some(t) => Err(err(shown(&t), "expected a check, 'not' or '('")),
            None => Err(err("", "the check string ends where a check was expected")),
        }
    }
}

/// Parses a check string (empty: always passes).
pub(crate) fn parse(text: &str) -> Result<Check, SyntaxError> {
    let tokens = tokenize(text);
    if tokens.is_empty() {
        return Ok(Check::Always);
    }
    let mut p = Parser { tokens, at: 0 };
    let check = p.or()?;
    match p.peek() {
        None => Ok(check),
        Some(Token::Close) => Err(err(")", "a ')' closes nothing")),
        Some(t) => Err(err(shown(t), "expected 'and' or 'or' between checks")),
    }
}
