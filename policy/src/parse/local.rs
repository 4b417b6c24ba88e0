//! Parsing of the guest-local sections, `files` and `exec`: workspace-only paths, grants
//! Landlock can enforce (no deny, file rules write-only), exec paths and aliases.

use super::node::{err, keyword, seq, string, strings, uint, Map, Node, Result};
use super::{action, opt_mode, risk, seen, Ids};
use crate::kinds::{Action, FileKind, FileOp};
use crate::model::{DeniedWrite, ExecRule, ExecSection, FileRule, FilesSection};
use crate::path::WorkspacePath;

pub(super) fn files(n: &Node<'_>, ids: &mut Ids) -> Result<FilesSection> {
    let m = Map::new(n, "files", &["mode", "rules", "observed_denied"])?;
    let mut rules = Vec::new();
    for r in m.list("rules")? {
        rules.push(file_rule(r, ids)?);
    }
    let mut denied = Vec::new();
    for d in m.list("observed_denied")? {
        let m = Map::new(
            d,
            "an observed_denied entry",
            &["path", "op", "errno", "count"],
        )?;
        denied.push(DeniedWrite {
            path: string(m.req("path")?, "path")?.to_string(),
            op: keyword(m.req("op")?, "op", FileOp::from_keyword, FileOp::expected())?,
            errno: m
                .get("errno")
                .map(|e| string(e, "errno").map(str::to_string))
                .transpose()?,
            count: uint(m.req("count")?, "count")?,
        });
    }
    Ok(FilesSection::new(opt_mode(&m)?, rules, denied))
}

fn file_rule(n: &Node<'_>, ids: &mut Ids) -> Result<FileRule> {
    let m = Map::new(
        n,
        "a files rule",
        &[
            "id", "path", "kind", "allow", "action", "mode", "observed", "risk", "seen",
        ],
    )?;
    let pn = m.req("path")?;
    let path = WorkspacePath::parse(string(pn, "path")?).map_err(|e| err(pn, e))?;
    let kind = keyword(
        m.req("kind")?,
        "kind",
        FileKind::from_keyword,
        FileKind::expected(),
    )?;
    if let Some(a) = m.get("action") {
        if keyword(a, "action", Action::from_keyword, Action::expected())? == Action::Deny {
            return Err(err(
                a,
                "files rules cannot deny: Landlock only grants; leave the path out instead",
            ));
        }
    }
    let an = m.req("allow")?;
    let mut allow = Vec::new();
    for op in seq(an, "allow")? {
        let o = keyword(
            op,
            "file operation",
            FileOp::from_keyword,
            FileOp::expected(),
        )?;
        if o == FileOp::CreateSpecial {
            return Err(err(
                op,
                "create_special cannot be allowed: Landlock rights for symlinks and device nodes are never granted",
            ));
        }
        if kind == FileKind::File && o != FileOp::Write {
            return Err(err(
                op,
                format!("a file rule can only allow write (Landlock grants {o} on the parent directory: use a dir rule)"),
            ));
        }
        allow.push(o);
    }
    if allow.is_empty() {
        return Err(err(an, "`allow` must list at least one operation"));
    }
    let id = ids.claim(&m, || format!("files:{path}"))?;
    Ok(FileRule {
        id,
        path,
        kind,
        allow,
        mode: opt_mode(&m)?,
        observed: m
            .get("observed")
            .map(|o| strings(o, "observed"))
            .transpose()?
            .unwrap_or_default(),
        risk: risk(&m)?,
        seen: seen(&m)?,
    })
}

pub(super) fn exec(n: &Node<'_>, ids: &mut Ids) -> Result<ExecSection> {
    let m = Map::new(n, "exec", &["mode", "rules"])?;
    let mut rules = Vec::new();
    for r in m.list("rules")? {
        let m = Map::new(
            r,
            "an exec rule",
            &["id", "path", "aliases", "action", "mode", "risk", "seen"],
        )?;
        let pn = m.req("path")?;
        let path = string(pn, "path")?;
        if path.is_empty() {
            return Err(err(pn, "exec path must not be empty"));
        }
        let id = ids.claim(&m, || format!("exec:{path}"))?;
        rules.push(ExecRule {
            id,
            path: path.to_string(),
            aliases: m
                .get("aliases")
                .map(|a| strings(a, "aliases"))
                .transpose()?
                .unwrap_or_default(),
            action: action(&m)?,
            mode: opt_mode(&m)?,
            risk: risk(&m)?,
            seen: seen(&m)?,
        });
    }
    Ok(ExecSection::new(opt_mode(&m)?, rules))
}
