//! jq expressions, through jaq (a jq implementation in Rust). Values go in and out as JSON text, so
//! numbers keep their exact digits (jaq keeps decimal literals as written).

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, ValT, Vars, data, unwrap_valr};
use jaq_json::Val;

use crate::error::{Error, Result};

type Data = data::JustLut<Val>;

/// A compiled jq program.
pub struct JqProgram {
    code: String,
    filter: jaq_core::Filter<Data>,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JqProgram({:?})", self.code)
    }
}

impl JqProgram {
    pub fn compile(code: &str) -> Result<JqProgram> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let bad = |detail: String| Error::usage(format!("jq program {code:?}: {detail}"));
        let modules = loader.load(&arena, File { code, path: () }).map_err(|errs| {
            let detail: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, e)| match e {
                    jaq_core::load::Error::Io(v) => v.into_iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>(),
                    jaq_core::load::Error::Lex(v) => v
                        .into_iter()
                        .map(|(exp, at)| format!("expected {} near {:?}", exp.as_str(), clip(at)))
                        .collect(),
                    jaq_core::load::Error::Parse(v) => v
                        .into_iter()
                        .map(|(exp, at)| format!("syntax error: expected {exp:?} near {:?}", clip(at)))
                        .collect(),
                })
                .collect();
            bad(detail.join("; "))
        })?;
        let filter = Compiler::default().with_funs(funs).compile(modules).map_err(|errs| {
            let detail: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, v)| v.into_iter().map(|(name, what)| format!("undefined {what:?} {name}")))
                .collect();
            bad(detail.join("; "))
        })?;
        Ok(JqProgram {
            code: code.to_owned(),
            filter,
        })
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    /// Run on one JSON text; every output as compact JSON text.
    pub fn run_json(&self, input: &str) -> Result<Vec<String>, String> {
        let outputs = self.run(input)?;
        outputs
            .iter()
            .map(|v| {
                let mut out = Vec::new();
                jaq_json::write::write(&mut out, &Default::default(), 0, v).map_err(|e| e.to_string())?;
                String::from_utf8(out).map_err(|_| "jq produced invalid UTF-8".to_string())
            })
            .collect()
    }

    /// Whether the program's first output is true (jq truthiness: not false, not null).
    pub fn test(&self, input: &str) -> Result<bool, String> {
        Ok(self.run(input)?.first().is_some_and(ValT::as_bool))
    }

    fn run(&self, input: &str) -> Result<Vec<Val>, String> {
        let val =
            jaq_json::read::parse_single(input.as_bytes()).map_err(|e| format!("jq could not read its input: {e}"))?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        self.filter
            .id
            .run((ctx, val))
            .map(unwrap_valr)
            .map(|r| r.map_err(|e| format!("jq {:?}: {e}", self.code)))
            .collect()
    }
}

fn clip(s: &str) -> String {
    s.chars().take(24).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_keeps_exact_numbers() {
        let p = JqProgram::compile(".a += 1 | .b").unwrap();
        assert_eq!(
            p.run_json(r#"{"a":1,"b":90071992547409931234}"#).unwrap(),
            vec!["90071992547409931234"]
        );
        let p = JqProgram::compile(".").unwrap();
        assert_eq!(p.run_json(r#"{"d":1.50}"#).unwrap(), vec![r#"{"d":1.50}"#]);
    }

    #[test]
    fn test_is_jq_truthiness() {
        let p = JqProgram::compile(".active").unwrap();
        assert!(p.test(r#"{"active":1}"#).unwrap());
        assert!(!p.test(r#"{"active":false}"#).unwrap());
        assert!(!p.test(r#"{}"#).unwrap());
        assert!(!JqProgram::compile("empty").unwrap().test("{}").unwrap());
    }

    #[test]
    fn errors_are_readable() {
        let e = JqProgram::compile(".x |||").unwrap_err();
        assert!(e.message().starts_with("jq program \".x |||\": syntax error"), "{e}");
        let e = JqProgram::compile("nosuchfn(1)").unwrap_err();
        assert!(e.message().contains("nosuchfn"), "{e}");
        let p = JqProgram::compile("error(\"boom\")").unwrap();
        assert!(p.run_json("{}").unwrap_err().contains("boom"));
    }
}
