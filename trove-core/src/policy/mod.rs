//! Authorization by policy rules, as upstream Trove does it with oslo.policy: every API operation names a rule
//! ([`rules`]), each rule is a check string evaluated against the caller ([`RequestContext`]) and the resource
//! ([`Target`]: the project, and the user when recorded, that own it).
//!
//! The defaults are upstream's ([`rules::DEFAULTS`]); an operator's policy file ([`parse_policy_file`]) replaces
//! the rules it names. A [`Policy`] is checked whole when it is built: every check string parses, every
//! `rule:NAME` exists, no rule refers to itself through others, and every rule a file adds is used.
//!
//! ```
//! use trove_core::policy::{rules, Policy, Target};
//! use trove_core::ports::RequestContext;
//!
//! let upstream = Policy::default();
//! let member = RequestContext::tenant("p1");
//! assert!(upstream.allows(rules::INSTANCE_SHOW, &member, &Target::project("p1")));
//! assert!(!upstream.allows(rules::INSTANCE_RESET_STATUS, &member, &Target::project("p1")));
//!
//! let opened = Policy::from_policy_file("\"instance:reset_status\": \"rule:admin_or_owner\"\n").unwrap();
//! assert!(opened.allows(rules::INSTANCE_RESET_STATUS, &member, &Target::project("p1")));
//! ```

mod check;
mod file;
pub mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::LazyLock;

pub use check::SyntaxError;
use check::{Check, Credentials, TargetView};
pub use file::{parse_policy_file, Entry};
pub use rules::{Origin, RuleDefault};

use crate::error::Error;
use crate::ports::RequestContext;

/// The resource a rule is checked against: the project (and the user, when the resource records one) that
/// owns it. For operations on a collection it is the caller's own project (upstream `authorize_on_tenant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    project_id: &'a str,
    user_id: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// A resource of project `project_id` (`%(tenant)s` and `%(project_id)s` in check strings).
    pub fn project(project_id: &'a str) -> Target<'a> {
        Target {
            project_id,
            user_id: None,
        }
    }

    /// The caller's own project: the target of operations on a collection.
    pub fn caller(ctx: &'a RequestContext) -> Target<'a> {
        Target::project(&ctx.tenant_id)
    }

    /// The same resource, owned by user `user_id` (`%(user_id)s`).
    pub fn with_user(self, user_id: &'a str) -> Target<'a> {
        Target {
            user_id: Some(user_id),
            ..self
        }
    }

    fn view(&self) -> TargetView<'a> {
        TargetView {
            project_id: self.project_id,
            user_id: self.user_id,
        }
    }
}

/// Why a policy (the defaults with an operator's file over them) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file is not a flat mapping of rule names to check strings.
    File {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A check string does not parse.
    Syntax {
        /// The rule whose check string it is.
        rule: String,
        /// The file's line, for a rule of the file.
        line: Option<usize>,
        /// What is wrong.
        error: SyntaxError,
    },
    /// A check refers to a rule that does not exist.
    UnknownRule {
        /// The rule whose check refers to it.
        rule: String,
        /// The name referred to.
        missing: String,
        /// The file's line, for a rule of the file.
        line: Option<usize>,
    },
    /// Rules refer to each other in a cycle.
    Cycle {
        /// The rules of the cycle, the first repeated at the end.
        cycle: Vec<String>,
        /// The file's line of a rule of the cycle it sets.
        line: Option<usize>,
    },
    /// The file sets a rule that is not one of this service's and that no other rule refers to (a typo, or a
    /// name from another service).
    UnusedRule {
        /// The name.
        rule: String,
        /// The file's line.
        line: usize,
        /// A rule of this service it may have meant.
        did_you_mean: Option<&'static str>,
    },
}

struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, "line {l}: "),
            None => Ok(()),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::File { line, message } => write!(f, "line {line}: {message}"),
            PolicyError::Syntax { rule, line, error } => {
                write!(f, "{}rule '{rule}': bad check string: {error}", Line(*line))
            }
            PolicyError::UnknownRule {
                rule,
                missing,
                line,
            } => write!(
                f,
                "{}rule '{rule}' refers to rule '{missing}', which is not defined",
                Line(*line)
            ),
            PolicyError::Cycle { cycle, line } => write!(
                f,
                "{}rules refer to each other in a cycle: {}",
                Line(*line),
                cycle.join(" -> ")
            ),
            PolicyError::UnusedRule {
                rule,
                line,
                did_you_mean,
            } => {
                write!(
                    f,
                    "line {line}: '{rule}' is not a rule of this service and no other rule refers to it"
                )?;
                match did_you_mean {
                    Some(m) => write!(f, "; did you mean '{m}'?"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for PolicyError {}

#[derive(Debug, Clone)]
struct Rule {
    text: String,
    check: Check,
    /// The file's line, for a rule the operator's file sets.
    line: Option<usize>,
}

/// A complete, checked set of rules: upstream's defaults with an operator's overrides.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: BTreeMap<String, Rule>,
}

static UPSTREAM: LazyLock<Policy> = LazyLock::new(|| {
    Policy::build(Vec::new()).unwrap_or_else(|e| unreachable!("the default rules are sound: {e}"))
});

impl Default for Policy {
    /// Upstream's defaults.
    fn default() -> Policy {
        UPSTREAM.clone()
    }
}

impl Policy {
    /// Upstream's defaults with `overrides` replacing (or adding) the rules they name.
    pub fn with_overrides(overrides: Vec<Entry>) -> Result<Policy, PolicyError> {
        Policy::build(overrides)
    }

    /// Upstream's defaults with the rules of a policy file's text (YAML subset or JSON, see
    /// [`parse_policy_file`]) over them.
    pub fn from_policy_file(text: &str) -> Result<Policy, PolicyError> {
        Policy::build(parse_policy_file(text)?)
    }

    fn build(overrides: Vec<Entry>) -> Result<Policy, PolicyError> {
        let mut rules = BTreeMap::new();
        for d in rules::DEFAULTS {
            let check = check::parse(d.check).map_err(|error| PolicyError::Syntax {
                rule: d.name.into(),
                line: None,
                error,
            })?;
            rules.insert(
                d.name.to_string(),
                Rule {
                    text: d.check.to_string(),
                    check,
                    line: None,
                },
            );
        }
        for e in &overrides {
            let check = check::parse(&e.check).map_err(|error| PolicyError::Syntax {
                rule: e.name.clone(),
                line: Some(e.line),
                error,
            })?;
            rules.insert(
                e.name.clone(),
                Rule {
                    text: e.check.clone(),
                    check,
                    line: Some(e.line),
                },
            );
        }
        let policy = Policy { rules };
        policy.check_references()?;
        policy.check_cycles()?;
        policy.check_unused(&overrides)?;
        Ok(policy)
    }

    fn references(&self, name: &str) -> Vec<&str> {
        let mut out = Vec::new();
        if let Some(r) = self.rules.get(name) {
            r.check.references(&mut out);
        }
        out
    }

    fn check_references(&self) -> Result<(), PolicyError> {
        // The file's rules first (by line), so the first error is the earliest line.
        let mut names: Vec<(&String, &Rule)> = self.rules.iter().collect();
        names.sort_by_key(|(_, r)| r.line.unwrap_or(usize::MAX));
        for (name, r) in names {
            if let Some(missing) = self
                .references(name)
                .into_iter()
                .find(|m| !self.rules.contains_key(*m))
            {
                return Err(PolicyError::UnknownRule {
                    rule: name.clone(),
                    missing: missing.to_string(),
                    line: r.line,
                });
            }
        }
        Ok(())
    }

    fn check_cycles(&self) -> Result<(), PolicyError> {
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for start in self.rules.keys() {
            let mut path: Vec<&str> = Vec::new();
            self.visit(start, &mut path, &mut done)?;
        }
        Ok(())
    }

    fn visit<'s>(
        &'s self,
        name: &'s str,
        path: &mut Vec<&'s str>,
        done: &mut BTreeSet<&'s str>,
    ) -> Result<(), PolicyError> {
        if done.contains(name) {
            return Ok(());
        }
        if let Some(pos) = path.iter().position(|p| *p == name) {
            let cycle: Vec<String> = path[pos..]
                .iter()
                .chain(std::iter::once(&name))
                .map(|s| s.to_string())
                .collect();
            let line = path[pos..]
                .iter()
                .filter_map(|n| self.rules.get(*n).and_then(|r| r.line))
                .min();
            return Err(PolicyError::Cycle { cycle, line });
        }
        path.push(name);
        for next in self.references(name) {
            self.visit(next, path, done)?;
        }
        path.pop();
        done.insert(name);
        Ok(())
    }

    fn check_unused(&self, overrides: &[Entry]) -> Result<(), PolicyError> {
        let referenced: BTreeSet<&str> =
            self.rules.keys().flat_map(|n| self.references(n)).collect();
        for e in overrides {
            let known = rules::DEFAULTS.iter().any(|d| d.name == e.name);
            if !known && !referenced.contains(e.name.as_str()) {
                let did_you_mean = rules::DEFAULTS
                    .iter()
                    .map(|d| d.name)
                    .find(|d| e.name.strip_prefix("trove:") == Some(*d));
                return Err(PolicyError::UnusedRule {
                    rule: e.name.clone(),
                    line: e.line,
                    did_you_mean,
                });
            }
        }
        Ok(())
    }

    /// The check string of `rule` in this policy.
    pub fn check_string(&self, rule: &str) -> Option<&str> {
        self.rules.get(rule).map(|r| r.text.as_str())
    }

    /// The rules an operator's file set, with their check strings.
    pub fn overrides(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rules
            .iter()
            .filter(|(_, r)| r.line.is_some())
            .map(|(n, r)| (n.as_str(), r.text.as_str()))
    }

    fn eval(&self, rule: &str, creds: &Credentials<'_>, target: &TargetView<'_>) -> bool {
        match self.rules.get(rule) {
            Some(r) => r
                .check
                .eval(creds, target, &|name| self.eval(name, creds, target)),
            None => false,
        }
    }

    fn credentials<'c>(&self, ctx: &'c RequestContext) -> Credentials<'c> {
        let mut creds = Credentials {
            project_id: &ctx.tenant_id,
            user_id: &ctx.user_id,
            roles: &ctx.roles,
            is_admin: false,
        };
        // Upstream sets the context's is_admin from `context_is_admin`, judged before it is set.
        creds.is_admin = self.eval(rules::CONTEXT_IS_ADMIN, &creds, &Target::caller(ctx).view());
        creds
    }

    /// Whether the caller counts as an admin (the rule `context_is_admin`; upstream's `context.is_admin`).
    pub fn is_admin(&self, ctx: &RequestContext) -> bool {
        self.credentials(ctx).is_admin
    }

    /// Whether `rule` allows the caller to act on `target`. A rule this policy does not have allows nothing.
    pub fn allows(&self, rule: &str, ctx: &RequestContext, target: &Target<'_>) -> bool {
        self.eval(rule, &self.credentials(ctx), &target.view())
    }

    /// [`Policy::allows`], or upstream's `PolicyNotAuthorized` (403) naming the rule.
    pub fn authorize(
        &self,
        rule: &str,
        ctx: &RequestContext,
        target: &Target<'_>,
    ) -> crate::Result<()> {
        if self.allows(rule, ctx, target) {
            Ok(())
        } else {
            tracing::debug!(rule, tenant = %ctx.tenant_id, user = %ctx.user_id, "policy refused");
            Err(Error::Forbidden {
                message: format!("Policy doesn't allow {rule} to be performed."),
            })
        }
    }
}
