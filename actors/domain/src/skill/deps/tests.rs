use super::*;
use proptest::prelude::*;

#[test]
fn pip_specs_are_canonical() {
    assert_eq!(parse_pip("Foo_Bar.baz").unwrap(), "foo-bar-baz");
    assert_eq!(
        parse_pip("Req[Socks , b] >= 2.0 , <3").unwrap(),
        "req[b,socks]<3,>=2.0"
    );
    assert_eq!(parse_pip("x==1.*").unwrap(), "x==1.*");
    assert_eq!(parse_pip(" tinypkg ~= 1.0 ").unwrap(), "tinypkg~=1.0");
}

#[test]
fn bad_pip_specs_are_refused_by_name() {
    for (bad, says) in [
        ("--index-url x", "option"),
        ("-r other.txt", "option"),
        ("-e .", "option"),
        ("git+https://github.com/a/b", "URL"),
        ("https://x/y.whl", "URL"),
        ("pkg @ https://x/y.whl", "URL"),
        ("pkg @ file:///x", "URL"),
        ("pkg@1", "direct references"),
        ("../x", "path"),
        ("./x", "path"),
        ("/abs/x", "path"),
        ("x; python_version<'3'", "markers"),
        ("x=1", "specifier"),
        ("x==", "not a version"),
        ("x==1 2", "not a version"),
        ("", "empty"),
        ("x[", "unclosed"),
    ] {
        let e = parse_pip(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
    assert!(parse_pip(&"a".repeat(201)).unwrap_err().contains("200"));
}

#[test]
fn npm_specs_are_canonical() {
    let s = parse_npm("left-pad").unwrap();
    assert_eq!(s.canonical(), "left-pad@*");
    assert_eq!(parse_npm("a@1.2.3").unwrap().range, "=1.2.3");
    assert_eq!(parse_npm("a@^1.2.0").unwrap().range, "^1.2.0");
    assert_eq!(
        parse_npm("@sc/a@>=1.0.0 <2.0.0").unwrap().canonical(),
        "@sc/a@>=1.0.0, <2.0.0"
    );
    assert_eq!(parse_npm("a@1.x").unwrap().range, "1.*");
    assert_eq!(parse_npm("@sc/a").unwrap().canonical(), "@sc/a@*");
    let r = parse_npm("a@1.2.3").unwrap().req();
    assert!(r.matches(&semver::Version::parse("1.2.3").unwrap()));
    assert!(!r.matches(&semver::Version::parse("1.2.4").unwrap()));
}

#[test]
fn bad_npm_specs_are_refused_by_name() {
    for (bad, says) in [
        ("a@file:../x", "file:"),
        ("file:../x", "not allowed"),
        ("a@git+https://x", "URL"),
        ("a@github:u/r", "git"),
        ("b@npm:a@1", "npm: alias"),
        ("a@link:../x", "link:"),
        ("a@latest", "not a version"),
        ("a@1 || 2", "||"),
        ("a@1.0.0 - 2.0.0", "hyphen"),
        ("A", "not an npm package name"),
        ("@sc", "not an npm package name"),
        (".hidden", "path"),
        ("--registry=x", "option"),
    ] {
        let e = parse_npm(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn requirements_and_headers_are_read() {
    let lines = requirements_lines("# c\n\nfoo==1  # why\nbar\n").unwrap();
    assert_eq!(lines, vec![(3, "foo==1".into()), (4, "bar".into())]);
    let script = "#!/usr/bin/env python3\n# /// script\n# requires-python = \">=3.9\"\n# dependencies = [\n#   \"tinypkg>=1\",  # the package\n#   'other',\n# ]\n# ///\nimport tinypkg\n";
    assert_eq!(
        pep723_dependencies(script).unwrap(),
        vec!["tinypkg>=1".to_string(), "other".into()]
    );
    assert!(pep723_dependencies("import x\n").unwrap().is_empty());
    assert!(pep723_dependencies("# /// script\n# dependencies = [\"a\"]\n").is_err());
    let deps =
        package_json_dependencies(r#"{"name":"s","dependencies":{"left-pad":"^1.0.0"}}"#).unwrap();
    assert_eq!(deps, vec![("left-pad".into(), "^1.0.0".into())]);
}

#[test]
fn the_set_names_the_refused_item_and_its_source() {
    let s = Sources {
        call_pip: vec!["ok".into()],
        requirements_txt: Some("fine\n--index-url http://evil\n"),
        ..Sources::default()
    };
    let e = DepSet::collect(&s).unwrap_err();
    assert!(e.starts_with("requirements.txt line 2:"), "{e}");
    let s = Sources {
        call_pip: vec!["B".into(), "a".into(), "b".into()],
        call_npm: vec!["x@1.0.0".into()],
        package_json: Some(r#"{"dependencies":{"x":"1.0.0"}}"#),
        python_script: Some("# /// script\n# dependencies = ['A']\n# ///\n"),
        ..Sources::default()
    };
    let set = DepSet::collect(&s).unwrap();
    assert_eq!(set.pip, vec!["a".to_string(), "b".into()]);
    assert_eq!(set.npm.len(), 1);
    let many: Vec<String> = (0..65).map(|i| format!("p{i}")).collect();
    let e = DepSet::collect(&Sources {
        call_pip: many,
        ..Sources::default()
    })
    .unwrap_err();
    assert!(e.contains("at most 64"), "{e}");
}

#[test]
fn hashes_differ_by_runtime_and_set() {
    let a = env_hash(EnvRuntime::Python, &["a".into()]);
    assert_eq!(a.len(), 32);
    assert_ne!(a, env_hash(EnvRuntime::Node, &["a".into()]));
    assert_ne!(a, env_hash(EnvRuntime::Python, &["a".into(), "b".into()]));
    assert_eq!(a, env_hash(EnvRuntime::Python, &["a".into()]));
}

proptest! {
    #[test]
    fn accepted_pip_specs_are_plain_and_stable(s in "[ -~]{0,60}") {
        if let Ok(c) = parse_pip(&s) {
            prop_assert!(!c.contains(['@', '/', ':', ';', ' ', '\\', '#']));
            prop_assert!(!c.starts_with('-'));
            prop_assert_eq!(parse_pip(&c).unwrap(), c.clone());
        }
    }

    #[test]
    fn accepted_npm_specs_are_plain_and_stable(s in "[ -~]{0,60}") {
        if let Ok(n) = parse_npm(&s) {
            prop_assert!(valid_npm_name(&n.name));
            prop_assert!(!n.range.contains([':', '/', '@', '\\']));
            prop_assert!(semver::VersionReq::parse(&n.range).is_ok());
            let again = parse_npm_parts(&n.name, &n.range).unwrap();
            prop_assert_eq!(again, n);
        }
    }

    #[test]
    fn sets_are_order_independent(mut items in proptest::collection::vec("[a-c]{1,2}(==[0-9])?", 0..10)) {
        let a = DepSet::collect(&Sources { call_pip: items.clone(), ..Sources::default() }).unwrap();
        items.reverse();
        let b = DepSet::collect(&Sources { call_pip: items, ..Sources::default() }).unwrap();
        prop_assert_eq!(env_hash(EnvRuntime::Python, &a.pip), env_hash(EnvRuntime::Python, &b.pip));
        let mut sorted = a.pip.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(sorted, a.pip);
    }
}
