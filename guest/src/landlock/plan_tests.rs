use super::*;

fn p(s: &str) -> PlanPath {
    PlanPath::new(s).expect("valid path")
}

fn kind(text: &str) -> (usize, PlanErrorKind) {
    let e = Plan::parse(text).expect_err("malformed");
    (e.line, e.kind)
}

const EXAMPLE: &str = "\
# written by the host
idagent-landlock 1
handle-files            # present: file-write rights are handled
handle-exec             # present: execute is handled

write /tmp/workspace make_reg,make_dir,write_file,truncate,remove_file,remove_dir,refer
write /dev write_file,truncate
exec /usr/bin/python3.11
";

#[test]
fn parses_the_example() {
    let plan = Plan::parse(EXAMPLE).expect("ok");
    assert!(plan.handle_files && plan.handle_exec);
    assert_eq!(plan.writes.len(), 2);
    assert_eq!(plan.writes[0].path, p("/tmp/workspace"));
    let ws: Rights = [
        Right::MakeReg,
        Right::MakeDir,
        Right::WriteFile,
        Right::Truncate,
        Right::RemoveFile,
        Right::RemoveDir,
        Right::Refer,
    ]
    .into_iter()
    .collect();
    assert_eq!(plan.writes[0].rights, ws);
    assert_eq!(plan.writes[1].rights, Rights::FILE);
    assert_eq!(plan.execs, vec![p("/usr/bin/python3.11")]);
}

#[test]
fn render_round_trips() {
    let odd = PathBuf::from(OsStr::from_bytes(b"/tmp/a b\tc\nd%e#f\xff\xc3\xa9/g"));
    let plan = Plan {
        handle_files: true,
        handle_exec: true,
        writes: vec![
            WriteRule {
                path: PlanPath::new(odd.clone()).expect("valid"),
                rights: Rights::ALL,
            },
            WriteRule {
                path: p("/dev/shm"),
                rights: Rights::EMPTY.with(Right::MakeReg),
            },
        ],
        execs: vec![PlanPath::new(odd).expect("valid"), p("/bin/true")],
    };
    let text = plan.render();
    assert!(text.starts_with("idagent-landlock 1\n"), "{text}");
    assert!(text.contains("write /tmp/a%20b%09c%0Ad%25e%23f%FF%C3%A9/g write_file,truncate,"));
    assert_eq!(text.lines().count(), 7, "one line per directive: {text}");
    assert_eq!(Plan::parse(&text), Ok(plan.clone()));
    // And text → plan → text is stable (rights in canonical order).
    let again = Plan::parse(EXAMPLE).expect("ok").render();
    assert_eq!(Plan::parse(&again).expect("ok").render(), again);
    // A plan that handles nothing is still a plan.
    let empty = Plan::default();
    assert_eq!(empty.render(), "idagent-landlock 1\n");
    assert_eq!(Plan::parse(&empty.render()), Ok(empty));
}

#[test]
fn decodes_escapes_in_either_case() {
    let plan = Plan::parse("idagent-landlock 1\nhandle-exec\nexec /a%2fb%2Fc\r\n").expect("ok");
    assert_eq!(plan.execs, vec![p("/a/b/c")]);
}

#[test]
fn header_is_required_first() {
    assert_eq!(kind(""), (1, PlanErrorKind::MissingHeader));
    assert_eq!(kind("# only\n\n"), (2, PlanErrorKind::MissingHeader));
    assert_eq!(
        kind("handle-files\nidagent-landlock 1\n"),
        (1, PlanErrorKind::MissingHeader)
    );
    assert_eq!(
        kind("\nidagent-landlock 2\n"),
        (2, PlanErrorKind::UnsupportedVersion("2".into()))
    );
    assert_eq!(
        kind("idagent-landlock\n"),
        (1, PlanErrorKind::MissingHeader)
    );
    assert_eq!(
        kind("idagent-landlock 1\nidagent-landlock 1\n"),
        (
            2,
            PlanErrorKind::UnknownDirective("idagent-landlock".into())
        )
    );
}

#[test]
fn rejects_malformed_lines_naming_them() {
    let h = "idagent-landlock 1\nhandle-files\nhandle-exec\n";
    let cases: Vec<(String, PlanErrorKind)> = vec![
        (
            format!("{h}frobnicate /x\n"),
            PlanErrorKind::UnknownDirective("frobnicate".into()),
        ),
        (
            format!("{h}handle-files\n"),
            PlanErrorKind::Repeated("handle-files"),
        ),
        (
            format!("{h}handle-exec now\n"),
            PlanErrorKind::Arity {
                directive: "handle-exec",
                expected: "no argument",
            },
        ),
        (
            format!("{h}write /tmp\n"),
            PlanErrorKind::Arity {
                directive: "write",
                expected: "PATH RIGHT[,RIGHT...]",
            },
        ),
        (
            format!("{h}write /tmp a b c\n"),
            PlanErrorKind::Arity {
                directive: "write",
                expected: "PATH RIGHT[,RIGHT...]",
            },
        ),
        (
            format!("{h}exec\n"),
            PlanErrorKind::Arity {
                directive: "exec",
                expected: "PATH",
            },
        ),
        (
            format!("{h}exec /a b\n"),
            PlanErrorKind::Arity {
                directive: "exec",
                expected: "PATH",
            },
        ),
        (
            format!("{h}write /tmp read_file\n"),
            PlanErrorKind::UnknownRight("read_file".into()),
        ),
        (
            format!("{h}write /tmp ioctl_dev\n"),
            PlanErrorKind::UnknownRight("ioctl_dev".into()),
        ),
        (
            format!("{h}write /tmp make_reg,\n"),
            PlanErrorKind::UnknownRight(String::new()),
        ),
        (
            format!("{h}write /tmp make_reg,make_reg\n"),
            PlanErrorKind::RepeatedRight("make_reg"),
        ),
        (
            format!("{h}write tmp make_reg\n"),
            PlanErrorKind::Path(PathError::NotAbsolute("tmp".into())),
        ),
        (
            format!("{h}write /tmp/../etc make_reg\n"),
            PlanErrorKind::Path(PathError::DotComponent("/tmp/../etc".into())),
        ),
        (
            format!("{h}exec /usr/./bin/sh\n"),
            PlanErrorKind::Path(PathError::DotComponent("/usr/./bin/sh".into())),
        ),
        (
            format!("{h}exec /a%00b\n"),
            PlanErrorKind::Path(PathError::Nul(PathBuf::from(OsStr::from_bytes(b"/a\0b")))),
        ),
        (
            format!("{h}exec /a%2\n"),
            PlanErrorKind::BadEscape("/a%2".into()),
        ),
        (
            format!("{h}exec /a%+1b\n"),
            PlanErrorKind::BadEscape("/a%+1b".into()),
        ),
        (
            format!("{h}exec /a%zz\n"),
            PlanErrorKind::BadEscape("/a%zz".into()),
        ),
        (
            format!("{h}exec /%C3%A9%\n"),
            PlanErrorKind::BadEscape("/%C3%A9%".into()),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(kind(&text), (4, want), "{text:?}");
    }
}

#[test]
fn rules_need_their_handle_directive() {
    assert_eq!(
        kind("idagent-landlock 1\nhandle-exec\n\nwrite /tmp make_reg\nwrite /x make_dir\n"),
        (
            4,
            PlanErrorKind::NotHandled {
                directive: "write",
                needs: "handle-files"
            }
        )
    );
    assert_eq!(
        kind("idagent-landlock 1\nexec /bin/true\nhandle-files\n"),
        (
            2,
            PlanErrorKind::NotHandled {
                directive: "exec",
                needs: "handle-exec"
            }
        )
    );
    // The handle directive may come after the rules it enables.
    assert!(Plan::parse("idagent-landlock 1\nexec /bin/true\nhandle-exec\n").is_ok());
}

#[test]
fn error_text_names_the_line() {
    let e = Plan::parse("idagent-landlock 1\nhandle-files\nwrite /tmp make_everything\n")
        .expect_err("bad right");
    assert_eq!(e.to_string(), "line 3: unknown right \"make_everything\"");
}

#[test]
fn rights_vocabulary() {
    for r in Right::ALL {
        assert_eq!(Right::from_name(r.name()), Some(r));
    }
    assert_eq!(Rights::ALL.iter().count(), 12);
    assert_eq!(Rights::FILE.to_string(), "write_file,truncate");
    assert!(Rights::EMPTY.is_empty());
    assert_eq!(Rights::ALL.intersection(Rights::FILE), Rights::FILE);
}
