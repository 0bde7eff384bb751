use proptest::prelude::*;

use super::check::{parse, Attribute, Check, Match, TargetField};
use super::*;

fn ctx(project: &str, user: &str, roles: &[&str]) -> RequestContext {
    RequestContext {
        tenant_id: project.into(),
        user_id: user.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

/// The defaults with `instance:show` replaced by `check`.
fn with_rule(check: &str) -> Policy {
    Policy::with_overrides(vec![Entry {
        name: rules::INSTANCE_SHOW.into(),
        check: check.into(),
        line: 1,
    }])
    .unwrap_or_else(|e| panic!("{check}: {e}"))
}

fn allows(check: &str, who: &RequestContext, target: &Target<'_>) -> bool {
    with_rule(check).allows(rules::INSTANCE_SHOW, who, target)
}

#[test]
fn check_strings_parse_to_the_expected_tree() {
    let role = |r: &str| Check::Role(Match::Literal(r.into()));
    let cases: Vec<(&str, Check)> = vec![
        ("", Check::Always),
        ("   ", Check::Always),
        ("@", Check::Always),
        ("!", Check::Never),
        ("role:admin", role("admin")),
        ("rule:admin", Check::Rule("admin".into())),
        ("is_admin:True", Check::IsAdmin(true)),
        ("is_admin:False", Check::IsAdmin(false)),
        (
            "project_id:%(tenant)s",
            Check::Attribute(Attribute::Project, Match::Target(TargetField::Project)),
        ),
        (
            "tenant:%(project_id)s",
            Check::Attribute(Attribute::Project, Match::Target(TargetField::Project)),
        ),
        (
            "user_id:%(user_id)s",
            Check::Attribute(Attribute::User, Match::Target(TargetField::User)),
        ),
        (
            "project_id:p1",
            Check::Attribute(Attribute::Project, Match::Literal("p1".into())),
        ),
        (
            "role:a or role:b and role:c",
            Check::Any(vec![role("a"), Check::All(vec![role("b"), role("c")])]),
        ),
        (
            "(role:a or role:b) and role:c",
            Check::All(vec![Check::Any(vec![role("a"), role("b")]), role("c")]),
        ),
        (
            "not role:a and role:b",
            Check::All(vec![Check::Not(Box::new(role("a"))), role("b")]),
        ),
        (
            "not (role:a or role:b)",
            Check::Not(Box::new(Check::Any(vec![role("a"), role("b")]))),
        ),
        (
            "NOT not role:a",
            Check::Not(Box::new(Check::Not(Box::new(role("a"))))),
        ),
        ("((role:a))", role("a")),
        (
            "role:a AND (role:b OR !)",
            Check::All(vec![role("a"), Check::Any(vec![role("b"), Check::Never])]),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text), Ok(want), "{text:?}");
    }
}

#[test]
fn bad_check_strings_are_refused_with_the_token() {
    let cases = [
        ("role:a or", "", "ends where a check was expected"),
        ("role:a role:b", "role:b", "expected 'and' or 'or'"),
        ("(role:a", "", "not closed"),
        ("role:a)", ")", "closes nothing"),
        ("and role:a", "and", "expected a check"),
        ("admin", "admin", "expected KIND:VALUE"),
        ("role:", "role:", "nothing after"),
        ("is_admin:yes", "is_admin:yes", "True or False"),
        (
            "project_id:%(owner)s",
            "project_id:%(owner)s",
            "no field 'owner'",
        ),
        (
            "project_id:x-%(tenant)s",
            "project_id:x-%(tenant)s",
            "whole value",
        ),
        (
            "domain_id:d1",
            "domain_id:d1",
            "unknown check kind 'domain_id'",
        ),
        ("http://example/check", "http://example/check", "remote"),
        ("()", ")", "expected a check"),
    ];
    for (text, token, message) in cases {
        let e = parse(text).expect_err(text);
        assert_eq!(e.token, token, "{text:?}: {e}");
        assert!(e.message.contains(message), "{text:?}: {e}");
    }
}

#[test]
fn atoms_compare_the_caller_with_the_target() {
    let member = ctx("p1", "u1", &["member"]);
    let own = Target::project("p1");
    let other = Target::project("p2");
    let table: &[(&str, &Target<'_>, bool)] = &[
        ("project_id:%(tenant)s", &own, true),
        ("project_id:%(tenant)s", &other, false),
        ("project_id:%(project_id)s", &own, true),
        ("project_id:p1", &other, true),
        ("user_id:%(user_id)s", &own, false), // the target records no user
        ("role:member", &own, true),
        ("role:MEMBER", &own, true), // roles compare case-insensitively
        ("roles:member", &own, true),
        ("roles:MEMBER", &own, false), // ... except through the generic check
        ("role:admin", &own, false),
        ("is_admin:True", &own, false),
        ("is_admin:False", &own, true),
        ("not role:admin", &own, true),
        ("@", &other, true),
        ("!", &own, false),
        ("", &other, true),
    ];
    for (check, target, want) in table {
        assert_eq!(allows(check, &member, target), *want, "{check}");
    }
    let owned = Target::project("p1").with_user("u1");
    assert!(allows("user_id:%(user_id)s", &member, &owned));
    assert!(!allows(
        "user_id:%(user_id)s",
        &ctx("p1", "u2", &[]),
        &owned
    ));
    assert!(allows("user:u1", &member, &other));
}

#[test]
fn upstream_defaults_admin_owner_and_anyone() {
    let p = Policy::default();
    let member = ctx("p1", "u1", &["member"]);
    let admin = ctx("p9", "root", &["admin"]);
    let own = Target::project("p1");
    let other = Target::project("p2");
    // rule:admin_or_owner
    assert!(p.allows(rules::INSTANCE_SHOW, &member, &own));
    assert!(!p.allows(rules::INSTANCE_SHOW, &member, &other));
    assert!(p.allows(rules::INSTANCE_SHOW, &admin, &other));
    // rule:admin
    assert!(!p.allows(rules::INSTANCE_RESET_STATUS, &member, &own));
    assert!(p.allows(rules::INSTANCE_RESET_STATUS, &admin, &other));
    // role:admin
    assert!(!p.allows(rules::BACKUP_INDEX_ALL_PROJECTS, &member, &own));
    assert!(p.allows(rules::BACKUP_INDEX_ALL_PROJECTS, &admin, &own));
    // ""
    assert!(p.allows(rules::DATASTORE_INDEX, &ctx("p3", "u3", &[]), &other));
    // unknown rule: nothing
    assert!(!p.allows("instance:fly", &admin, &own));
    assert!(p.is_admin(&admin) && !p.is_admin(&member));
}

#[test]
fn refusal_is_upstreams_403_naming_the_rule() {
    let e = Policy::default()
        .authorize(
            rules::INSTANCE_RESET_STATUS,
            &ctx("p1", "u1", &[]),
            &Target::project("p1"),
        )
        .expect_err("member");
    assert_eq!(e.fault().status, 403);
    assert_eq!(
        e.to_string(),
        "Policy doesn't allow instance:reset_status to be performed."
    );
}

#[test]
fn is_admin_follows_context_is_admin() {
    // An operator makes "operator" the admin role: is_admin:True and rule:admin follow.
    let p = Policy::from_policy_file("context_is_admin: role:operator\n").unwrap();
    let op = ctx("p1", "u1", &["operator"]);
    assert!(p.is_admin(&op));
    assert!(p.allows(rules::INSTANCE_RESET_STATUS, &op, &Target::project("p2")));
    // role:admin still passes `admin` (upstream: role:admin or is_admin:True).
    assert!(p.allows(
        rules::INSTANCE_RESET_STATUS,
        &ctx("p1", "u1", &["admin"]),
        &Target::project("p2")
    ));
    // A context_is_admin that refers to is_admin judges it false (it is being decided).
    let q = Policy::from_policy_file("context_is_admin: \"is_admin:True\"\n").unwrap();
    assert!(!q.is_admin(&ctx("p1", "u1", &["admin"])));
}

#[test]
fn every_enforced_rule_has_a_default_and_names_are_unique() {
    for name in rules::ENFORCED {
        assert!(
            rules::DEFAULTS.iter().any(|d| d.name == *name),
            "{name} has no default"
        );
    }
    for (i, d) in rules::DEFAULTS.iter().enumerate() {
        assert!(
            rules::DEFAULTS[..i].iter().all(|e| e.name != d.name),
            "{} twice",
            d.name
        );
        assert_eq!(Policy::default().check_string(d.name), Some(d.check));
    }
    // Upstream's base rules, verbatim.
    let p = Policy::default();
    assert_eq!(p.check_string("context_is_admin"), Some("role:admin"));
    assert_eq!(p.check_string("admin"), Some("role:admin or is_admin:True"));
    assert_eq!(
        p.check_string("admin_or_owner"),
        Some("rule:admin or project_id:%(tenant)s")
    );
    assert_eq!(p.check_string("default"), Some("rule:admin_or_owner"));
}

#[test]
fn yaml_policy_files_override_the_rules_they_name() {
    let text = "\
---
# Let project members reset their own instances.
\"instance:reset_status\": \"rule:admin_or_owner\"   # opened up
'backup:index:all_projects': 'role:auditor or role:admin'
instance:extension:user:create: rule:owner_only

owner_only: project_id:%(tenant)s and not role:readonly
datastore:index: \"\"
#\"instance:delete\": \"!\"
";
    let p = Policy::from_policy_file(text).unwrap();
    assert_eq!(
        p.check_string(rules::INSTANCE_RESET_STATUS),
        Some("rule:admin_or_owner")
    );
    assert_eq!(
        p.check_string(rules::BACKUP_INDEX_ALL_PROJECTS),
        Some("role:auditor or role:admin")
    );
    assert_eq!(
        p.check_string("owner_only"),
        Some("project_id:%(tenant)s and not role:readonly")
    );
    assert_eq!(p.check_string(rules::DATASTORE_INDEX), Some(""));
    assert_eq!(p.check_string(rules::INSTANCE_DELETE), Some(OWNER_DEFAULT));
    let member = ctx("p1", "u1", &["member"]);
    let readonly = ctx("p1", "u2", &["readonly"]);
    let own = Target::project("p1");
    assert!(p.allows(rules::INSTANCE_RESET_STATUS, &member, &own));
    assert!(p.allows(rules::USER_CREATE, &member, &own));
    assert!(!p.allows(rules::USER_CREATE, &readonly, &own));
    // Not even an admin of another project: the custom rule has no admin clause.
    assert!(!p.allows(rules::USER_CREATE, &ctx("p2", "a", &["admin"]), &own));
    assert!(p.allows(
        rules::BACKUP_INDEX_ALL_PROJECTS,
        &ctx("p1", "u1", &["auditor"]),
        &own
    ));
    let mut names: Vec<&str> = p.overrides().map(|(n, _)| n).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "backup:index:all_projects",
            "datastore:index",
            "instance:extension:user:create",
            "instance:reset_status",
            "owner_only"
        ]
    );
}

const OWNER_DEFAULT: &str = "rule:admin_or_owner";

#[test]
fn json_policy_files_are_accepted_too() {
    let text = "{\n  \"instance:reset_status\": \"rule:admin_or_owner\",\n  \"instance:delete\": \"!\"\n}\n";
    let p = Policy::from_policy_file(text).unwrap();
    assert!(!p.allows(
        rules::INSTANCE_DELETE,
        &ctx("p1", "u", &["admin"]),
        &Target::project("p1")
    ));
    let e = Policy::from_policy_file("{\n  \"instance:delete\": [\"role:admin\"]\n}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2: the value of 'instance:delete' must be a string (a check string)"
    );
    let e = Policy::from_policy_file("{\n  \"instance:delete\" \"!\"\n}").unwrap_err();
    assert!(e.to_string().starts_with("line 2: not valid JSON"), "{e}");
}

#[test]
fn broken_policy_files_name_the_line_and_the_fault() {
    let cases = [
        ("instance:delete: rule:admin\n  nested: x\n", "line 2: indented line"),
        ("- instance:delete\n", "line 1: '-' cannot start a plain key"),
        ("instance:delete: [rule:admin]\n", "line 1: '[' cannot start a plain value"),
        ("instance:delete: !\n", "line 1: '!' cannot start a plain value"),
        ("instance:delete:\n", "line 1: rule 'instance:delete' has no check string"),
        ("\n\ninstance:delete\n", "line 3: expected 'rule name: check string'"),
        ("\"instance:delete: x\n", "line 1: a double-quoted string is not closed"),
        ("instance:delete: 'x' y\n", "line 1: unexpected text after the check string"),
        ("instance:delete: \"\\q\"\n", "line 1: unsupported escape"),
        (
            "instance:delete: x\n# c\ninstance:delete: y\n",
            "line 3: rule 'instance:delete' is given twice (first on line 1)",
        ),
        (
            "instance:create: \"@\"\ninstance:delete: \"role:admin or\"\n",
            "line 2: rule 'instance:delete': bad check string: the check string ends",
        ),
        (
            "instance:delete: rule:admn\n",
            "line 1: rule 'instance:delete' refers to rule 'admn', which is not defined",
        ),
        (
            "x: rule:y\ny: rule:x\ninstance:delete: rule:x\n",
            "line 1: rules refer to each other in a cycle: x -> y -> x",
        ),
        (
            "admin: rule:admin_or_owner\n",
            "line 1: rules refer to each other in a cycle: admin -> admin_or_owner -> admin",
        ),
        ("instance:delete: rule:instance:delete\n", "cycle: instance:delete -> instance:delete"),
        (
            "\"trove:instance:reset_status\": \"rule:admin_or_owner\"\n",
            "line 1: 'trove:instance:reset_status' is not a rule of this service and no other rule refers to \
             it; did you mean 'instance:reset_status'?",
        ),
    ];
    for (text, want) in cases {
        let e = Policy::from_policy_file(text).expect_err(text);
        assert!(
            e.to_string().contains(want),
            "{text:?}: got {e}, want {want}"
        );
    }
    // Comments, blank lines and an empty file are fine: the defaults stay.
    let p = Policy::from_policy_file("# nothing here\n\n   \n").unwrap();
    assert_eq!(p.overrides().count(), 0);
    assert_eq!(
        p.check_string(rules::INSTANCE_RESET_STATUS),
        Some("rule:admin")
    );
}

#[test]
fn quoted_scalars_keep_their_characters() {
    let entries = parse_policy_file(
        "'it''s': \"a \\\"b\\\" # not a comment\"\nplain#hash: x#y # comment\n\"k\":v\n",
    );
    // `"k":v` is fine for a quoted key (YAML allows no space there); the plain `x#y` keeps its hash.
    let entries = entries.unwrap();
    assert_eq!(entries[0].name, "it's");
    assert_eq!(entries[0].check, "a \"b\" # not a comment");
    assert_eq!(entries[1].name, "plain#hash");
    assert_eq!(entries[1].check, "x#y");
    assert_eq!(
        (
            entries[2].name.as_str(),
            entries[2].check.as_str(),
            entries[2].line
        ),
        ("k", "v", 3)
    );
}

/// A random boolean check built from `@` and `!`, with its expected value.
fn expr() -> impl Strategy<Value = (String, bool)> {
    let leaf = prop_oneof![
        Just(("@".to_string(), true)),
        Just(("!".to_string(), false))
    ];
    leaf.prop_recursive(5, 40, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|(s, v)| (format!("not {s}"), !v)),
            (inner.clone(), inner.clone())
                .prop_map(|((a, x), (b, y))| (format!("({a} and {b})"), x && y)),
            (inner.clone(), inner.clone())
                .prop_map(|((a, x), (b, y))| (format!("({a} or {b})"), x || y)),
            inner.prop_map(|(s, v)| (format!("( {s} )"), v)),
        ]
    })
}

proptest! {
    #[test]
    fn parsed_checks_evaluate_like_the_boolean_they_spell((text, want) in expr()) {
        let p = with_rule(&text);
        prop_assert_eq!(p.allows(rules::INSTANCE_SHOW, &ctx("p", "u", &[]), &Target::project("p")), want);
    }

    #[test]
    fn precedence_is_not_then_and_then_or(a in any::<bool>(), b in any::<bool>(), c in any::<bool>()) {
        let s = |v: bool| if v { "@" } else { "!" };
        let text = format!("{} or not {} and {}", s(a), s(b), s(c));
        let p = with_rule(&text);
        prop_assert_eq!(
            p.allows(rules::INSTANCE_SHOW, &ctx("p", "u", &[]), &Target::project("p")),
            a || (!b && c)
        );
    }

    #[test]
    fn admin_or_owner_is_admin_role_or_same_project(
        caller in "[a-c]", owner in "[a-c]", admin in any::<bool>(), extra in "[a-z]{0,6}",
    ) {
        let mut roles = vec![extra];
        if admin { roles.push("Admin".into()); }
        let who = RequestContext { tenant_id: caller.clone(), user_id: "u".into(), roles };
        let p = Policy::default();
        prop_assert_eq!(
            p.allows(rules::INSTANCE_DELETE, &who, &Target::project(&owner)),
            admin || caller == owner
        );
        prop_assert_eq!(p.allows(rules::INSTANCE_RESET_STATUS, &who, &Target::project(&owner)), admin);
    }

    #[test]
    fn parsing_any_text_answers_without_panicking(text in "\\PC{0,80}") {
        let _ = parse(&text);
        let _ = Policy::from_policy_file(&text);
    }

    #[test]
    fn any_file_of_quoted_entries_round_trips(
        checks in proptest::collection::vec("[a-z:_ ()@!%]{0,30}", 1..6),
    ) {
        // Every rule of the table gets a double-quoted check with quotes and backslashes escaped.
        let names: Vec<&str> = rules::ENFORCED.iter().take(checks.len()).copied().collect();
        let text: String = names
            .iter()
            .zip(&checks)
            .map(|(n, c)| format!("\"{n}\": \"{}\"\n", c.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        let entries = parse_policy_file(&text).unwrap();
        prop_assert_eq!(entries.len(), names.len());
        for ((e, n), c) in entries.iter().zip(&names).zip(&checks) {
            prop_assert_eq!(&e.name, n);
            prop_assert_eq!(&e.check, c);
        }
    }
}
