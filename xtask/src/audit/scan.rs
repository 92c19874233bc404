//! Finds allocation and thread sites in C and C++ sources without compiling them: a lexer that
//! drops comments, string and character literals and preprocessor directives, follows `#if`
//! branches it can decide from the component's compile definitions (dead branches such as
//! `#if USE_NICE` with `USE_NICE=0` are not scanned), and recognisers over the tokens left.
//!
//! `#define` bodies are skipped: a wrapper macro allocates where it is used, so each known
//! wrapper (`SCTP_MALLOC`, libjuice's `thread_init`, …) is recognised at its call sites and
//! reported with what it expands to.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// malloc/calloc/realloc, directly or through a wrapper macro that expands to them.
    CAlloc,
    /// strdup, posix_memalign, asprintf, …: libc allocates internally, where no macro reaches.
    LibcAlloc,
    /// heap_caps_* with caps chosen at the call.
    CapsAlloc,
    /// mbedtls_calloc: mbedTLS's configured allocator.
    MbedtlsAlloc,
    /// new, new[], make_shared, make_unique, allocate_shared.
    CxxNew,
    /// A standard container type named in the code (each allocates through operator new).
    Container,
    /// pthread_create, std::thread, or a wrapper of them.
    Thread,
    /// FreeRTOS xTaskCreate*: its stack comes from the task API, not from esp_pthread_cfg_t.
    Task,
    /// An allocation the lab measured at a line where the scan recognised no site (a container
    /// method, a helper function): it follows operator new (C++) or the redirect (C).
    Runtime,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::CAlloc => "c-alloc",
            Kind::LibcAlloc => "libc-alloc",
            Kind::CapsAlloc => "caps-alloc",
            Kind::MbedtlsAlloc => "mbedtls-alloc",
            Kind::CxxNew => "c++-new",
            Kind::Container => "container",
            Kind::Thread => "thread",
            Kind::Task => "task",
            Kind::Runtime => "runtime",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    C,
    Cxx,
}

/// One site as the scanner finds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    pub line: u32,
    pub kind: Kind,
    /// What is called, with what a wrapper expands to: `SCTP_MALLOC → malloc`.
    pub call: String,
    /// Threads and tasks: the stack size the call asks for, as written; None when inherited.
    pub stack: Option<String>,
}

/// Compile definitions of a component: `Some(v)` for a known integer value, `None` for defined
/// with a value we cannot evaluate.
pub type Defines = BTreeMap<String, Option<i64>>;

/// Platform macros that ESP-IDF's compilers never define: branches that need them are dead.
const NOT_ON_ESP_IDF: &[&str] = &[
    "_WIN32",
    "_WIN64",
    "WIN32",
    "_MSC_VER",
    "__MINGW32__",
    "__CYGWIN__",
    "__APPLE__",
    "__MACH__",
    "__FreeBSD__",
    "__NetBSD__",
    "__OpenBSD__",
    "__DragonFly__",
    "__ANDROID__",
    "__linux__",
    "__linux",
    "__native_client__",
    "__EMSCRIPTEN__",
    "__sun",
    "_AIX",
];

const C_ALLOC: &[&str] = &["malloc", "calloc", "realloc"];
const LIBC_ALLOC: &[&str] = &[
    "strdup",
    "strndup",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "reallocarray",
    "asprintf",
    "vasprintf",
];
const CAPS_ALLOC: &[&str] = &[
    "heap_caps_malloc",
    "heap_caps_calloc",
    "heap_caps_realloc",
    "heap_caps_aligned_alloc",
    "heap_caps_malloc_prefer",
    "heap_caps_calloc_prefer",
];
const CXX_MAKERS: &[&str] = &["make_shared", "make_unique", "allocate_shared"];
const CONTAINERS: &[&str] = &[
    "vector",
    "deque",
    "list",
    "forward_list",
    "map",
    "multimap",
    "set",
    "multiset",
    "unordered_map",
    "unordered_multimap",
    "unordered_set",
    "unordered_multiset",
    "queue",
    "priority_queue",
    "stack",
    "function",
];
const TASKS: &[&str] = &[
    "xTaskCreate",
    "xTaskCreatePinnedToCore",
    "xTaskCreateStatic",
    "xTaskCreateStaticPinnedToCore",
    "xTaskCreateWithCaps",
    "xTaskCreatePinnedToCoreWithCaps",
];

/// Wrapper macros and functions of the stack, by what they expand to. Only names that are
/// wrappers in the stack's own headers; each is recognised at its call sites.
const WRAPPERS: &[(&str, &str)] = &[
    ("SCTP_MALLOC", "malloc"),         // usrsctp netinet/sctp_os_userspace.h -> MALLOC
    ("SCTP_MALLOC_SONAME", "malloc"),  // idem
    ("MALLOC", "malloc"),              // usrsctp user_malloc.h
    ("SCTP_ZONE_GET", "malloc"),       // usrsctp with SCTP_SIMPLE_ALLOCATOR
    ("srtp_crypto_alloc", "calloc"),   // libsrtp crypto/kernel/alloc.c
    ("thread_init", "pthread_create"), // libjuice src/thread.h
];

#[derive(Debug)]
struct Tok {
    text: String,
    line: u32,
}

/// Scans one source file. `lang` decides `__cplusplus`.
pub fn scan(source: &str, lang: Lang, defines: &Defines) -> Vec<Found> {
    let toks = lex(source, lang, defines);
    recognise(&toks)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// One conditional-compilation level.
struct Cond {
    /// This branch is compiled (as far as we can tell).
    alive: bool,
    /// A branch of this chain was certainly taken: later `#elif`/`#else` are dead.
    decided: bool,
}

/// Tokens of `src` outside comments, strings and dead `#if` branches, each with its line.
fn lex(src: &str, lang: Lang, defines: &Defines) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut conds: Vec<Cond> = Vec::new();
    let mut line = 1u32;
    let mut i = 0;
    let mut line_start = true;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\\' && chars.get(i + 1) == Some(&'\n') {
            i += 2;
            line += 1;
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            i = skip_line_comment(&chars, i);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            i = skip_block_comment(&chars, i, &mut line);
            continue;
        }
        if c == '#' && line_start {
            let (text, next) = read_directive(&chars, i, &mut line);
            i = next;
            directive(text.trim(), lang, defines, &mut conds);
            continue;
        }
        line_start = false;
        let (text, next) = if c == 'R' && chars.get(i + 1) == Some(&'"') && lang == Lang::Cxx {
            (None, skip_raw_string(&chars, i, &mut line))
        } else if c == '"' || c == '\'' {
            (None, skip_quoted(&chars, i, &mut line))
        } else if is_ident_start(c) {
            let end = scan_while(&chars, i, is_ident);
            (Some(chars[i..end].iter().collect()), end)
        } else if c.is_ascii_digit() {
            // Covers suffixes, hex digits and a decimal point: `0x1fu`, `1.5f`.
            let end = scan_while(&chars, i, |c| is_ident(c) || c == '.');
            (Some(chars[i..end].iter().collect()), end)
        } else {
            let text = punctuator(&chars, i);
            let end = i + text.len();
            (Some(text), end)
        };
        i = next;
        // Tokens in a dead branch are dropped, but the lines they span still count.
        if let Some(text) = text {
            if conds.iter().all(|c| c.alive) {
                toks.push(Tok { text, line });
            }
        }
    }
    toks
}

/// Index of the newline (or end) that ends the `//` comment starting at `at`.
fn skip_line_comment(chars: &[char], at: usize) -> usize {
    scan_while(chars, at, |c| c != '\n')
}

/// Index of the first char at or after `at` that fails `keep` (or the end).
fn scan_while(chars: &[char], at: usize, keep: impl Fn(char) -> bool) -> usize {
    let mut i = at;
    while i < chars.len() && keep(chars[i]) {
        i += 1;
    }
    i
}

/// The text of the directive whose `#` is at `at` (its logical line: continuations joined,
/// comments dropped) and the index of the newline that ends it.
fn read_directive(chars: &[char], at: usize, line: &mut u32) -> (String, usize) {
    let mut text = String::new();
    let mut i = at + 1;
    while i < chars.len() && chars[i] != '\n' {
        if chars[i] == '\\' && chars.get(i + 1) == Some(&'\n') {
            *line += 1;
            i += 2;
            text.push(' ');
            continue;
        }
        if chars[i] == '/' && chars.get(i + 1) == Some(&'/') {
            i = skip_line_comment(chars, i);
            break;
        }
        if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
            i = skip_block_comment(chars, i, line);
            text.push(' ');
            continue;
        }
        text.push(chars[i]);
        i += 1;
    }
    (text, i)
}

/// Index after the C++ raw string `R"delim( … )delim"` starting at `at`, counting its lines.
fn skip_raw_string(chars: &[char], at: usize, line: &mut u32) -> usize {
    let open = at + 2;
    let mut j = scan_while(chars, open, |c| c != '(');
    let delim: String = chars[open..j.min(chars.len())].iter().collect();
    let close: Vec<char> = format!("){delim}\"").chars().collect();
    j += 1;
    while j < chars.len() && !chars[j..].starts_with(&close) {
        if chars[j] == '\n' {
            *line += 1;
        }
        j += 1;
    }
    j + close.len()
}

/// Index after the string or char literal whose opening quote is at `at`. An unterminated
/// literal stops at the end of its line, so one stray quote cannot swallow the file.
fn skip_quoted(chars: &[char], at: usize, line: &mut u32) -> usize {
    let quote = chars[at];
    let mut i = at + 1;
    while i < chars.len() && chars[i] != quote && chars[i] != '\n' {
        if chars[i] == '\\' {
            if chars.get(i + 1) == Some(&'\n') {
                *line += 1;
            }
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The punctuator at `at`: `::` and `->` as one token (the recogniser matches on them),
/// anything else one char.
fn punctuator(chars: &[char], at: usize) -> String {
    let two: String = chars[at..(at + 2).min(chars.len())].iter().collect();
    if two == "::" || two == "->" {
        two
    } else {
        chars[at].to_string()
    }
}

/// Index after the `/* … */` starting at `at`, counting the lines it spans.
fn skip_block_comment(chars: &[char], at: usize, line: &mut u32) -> usize {
    let mut i = at + 2;
    while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
        if chars[i] == '\n' {
            *line += 1;
        }
        i += 1;
    }
    i + 2
}

fn directive(text: &str, lang: Lang, defines: &Defines, conds: &mut Vec<Cond>) {
    let (name, rest) = text.split_at(text.find(|c: char| !is_ident(c)).unwrap_or(text.len()));
    let rest = rest.trim();
    let eval = |expr: &str| -> Option<bool> { Expr::new(expr, lang, defines).parse() };
    match name {
        "if" | "ifdef" | "ifndef" => {
            let value = match name {
                "ifdef" => defined(rest, lang, defines),
                "ifndef" => defined(rest, lang, defines).map(|v| !v),
                _ => eval(rest),
            };
            conds.push(Cond { alive: value != Some(false), decided: value == Some(true) });
        }
        "elif" | "elifdef" | "elifndef" => {
            if let Some(top) = conds.last_mut() {
                if top.decided {
                    top.alive = false;
                } else {
                    let value = match name {
                        "elifdef" => defined(rest, lang, defines),
                        "elifndef" => defined(rest, lang, defines).map(|v| !v),
                        _ => eval(rest),
                    };
                    top.alive = value != Some(false);
                    top.decided = value == Some(true);
                }
            }
        }
        "else" => {
            if let Some(top) = conds.last_mut() {
                top.alive = !top.decided;
                top.decided = true;
            }
        }
        "endif" => {
            conds.pop();
        }
        _ => {}
    }
}

fn defined(name: &str, lang: Lang, defines: &Defines) -> Option<bool> {
    let name = name.trim();
    if name == "__cplusplus" {
        return Some(lang == Lang::Cxx);
    }
    if defines.contains_key(name) {
        Some(true)
    } else if NOT_ON_ESP_IDF.contains(&name) {
        Some(false)
    } else {
        None
    }
}

/// Three-valued `#if` evaluation: `None` when the answer depends on something we do not know
/// (a header's macro, a comparison); such branches are scanned.
struct Expr<'a> {
    toks: Vec<String>,
    at: usize,
    lang: Lang,
    defines: &'a Defines,
}

impl<'a> Expr<'a> {
    fn new(text: &str, lang: Lang, defines: &'a Defines) -> Self {
        let mut toks = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if is_ident(c) {
                let s = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                toks.push(chars[s..i].iter().collect());
            } else {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let t = if ["&&", "||", "==", "!=", "<=", ">="].contains(&two.as_str()) { two } else { c.to_string() };
                i += t.len();
                toks.push(t);
            }
        }
        Expr { toks, at: 0, lang, defines }
    }

    fn peek(&self) -> Option<&str> {
        self.toks.get(self.at).map(String::as_str)
    }

    /// The whole expression, or None if it has anything beyond !, &&, ||, (), defined, names
    /// and integers.
    fn parse(mut self) -> Option<bool> {
        let v = self.or()?;
        if self.at == self.toks.len() {
            v
        } else {
            None
        }
    }

    fn or(&mut self) -> Option<Option<bool>> {
        self.chain("||", Self::and)
    }

    fn and(&mut self) -> Option<Option<bool>> {
        self.chain("&&", Self::unary)
    }

    /// `a op b op …` in three-valued logic: `true` decides `||`, `false` decides `&&`.
    fn chain(&mut self, op: &str, operand: fn(&mut Self) -> Option<Option<bool>>) -> Option<Option<bool>> {
        let decides = op == "||";
        let mut v = operand(self)?;
        while self.peek() == Some(op) {
            self.at += 1;
            let r = operand(self)?;
            v = if v == Some(decides) || r == Some(decides) {
                Some(decides)
            } else if v.is_some() && r.is_some() {
                Some(!decides)
            } else {
                None
            };
        }
        Some(v)
    }

    fn unary(&mut self) -> Option<Option<bool>> {
        let t = self.peek()?.to_string();
        self.at += 1;
        match t.as_str() {
            "!" => Some(self.unary()?.map(|v| !v)),
            "(" => {
                let v = self.or()?;
                (self.peek() == Some(")")).then(|| self.at += 1)?;
                Some(v)
            }
            "defined" => {
                let paren = self.peek() == Some("(");
                if paren {
                    self.at += 1;
                }
                let name = self.peek()?.to_string();
                self.at += 1;
                if paren {
                    (self.peek() == Some(")")).then(|| self.at += 1)?;
                }
                Some(defined(&name, self.lang, self.defines))
            }
            t if t.chars().all(|c| c.is_ascii_digit()) => Some(Some(t.parse::<i64>().ok()? != 0)),
            t if t.chars().next().is_some_and(is_ident_start) => {
                if t == "__cplusplus" {
                    return Some(Some(self.lang == Lang::Cxx));
                }
                Some(match self.defines.get(t) {
                    Some(Some(v)) => Some(*v != 0),
                    Some(None) => None,
                    None if NOT_ON_ESP_IDF.contains(&t) => Some(false),
                    None => None,
                })
            }
            _ => None,
        }
    }
}

/// Keywords that may precede a call; any other identifier before `name(` makes it a declaration.
const BEFORE_CALL: &[&str] = &["return", "else", "do", "case", "sizeof", "throw", "co_return", "co_yield"];

fn recognise(toks: &[Tok]) -> Vec<Found> {
    let mut found = Vec::new();
    let text = |i: usize| toks.get(i).map(|t| t.text.as_str()).unwrap_or("");
    for i in 0..toks.len() {
        let t = text(i);
        let line = toks[i].line;
        let prev = if i > 0 { text(i - 1) } else { "" };
        // `x.malloc(`, `void *malloc(`, `int thread_init(`: members and declarations are not calls.
        let member_or_pointer = matches!(prev, "." | "->" | "*" | "&");
        let declaration = prev.chars().next().is_some_and(is_ident_start) && !BEFORE_CALL.contains(&prev);
        let called = text(i + 1) == "(" && !member_or_pointer && !declaration;
        let mut push = |kind: Kind, call: String, stack: Option<String>| found.push(Found { line, kind, call, stack });
        if called {
            if C_ALLOC.contains(&t) {
                push(Kind::CAlloc, t.to_string(), None);
            } else if LIBC_ALLOC.contains(&t) {
                push(Kind::LibcAlloc, t.to_string(), None);
            } else if CAPS_ALLOC.contains(&t) {
                push(Kind::CapsAlloc, t.to_string(), None);
            } else if t == "mbedtls_calloc" {
                push(Kind::MbedtlsAlloc, t.to_string(), None);
            } else if t == "pthread_create" {
                let stack = (argument(toks, i + 1, 1) != "NULL" && argument(toks, i + 1, 1) != "nullptr")
                    .then(|| stack_size_set_before(toks, i))
                    .flatten();
                push(Kind::Thread, t.to_string(), stack);
            } else if TASKS.contains(&t) {
                push(Kind::Task, t.to_string(), Some(argument(toks, i + 1, 2)));
            } else if let Some((_, to)) = WRAPPERS.iter().find(|(w, _)| *w == t) {
                let kind = if *to == "pthread_create" { Kind::Thread } else { Kind::CAlloc };
                push(kind, format!("{t} → {to}"), None);
            }
        }
        if t == "new" && prev != "operator" {
            // `new (std::nothrow) T` allocates; `new (place) T` does not.
            let mut j = i + 1;
            if text(j) == "(" {
                if text(j + 1) == "std" && text(j + 3) == "nothrow" || text(j + 1) == "nothrow" {
                    j = skip_group(toks, j);
                } else {
                    continue;
                }
            }
            // The type: names, `::`, template arguments; then `[` makes it new[].
            while j < toks.len() {
                match text(j) {
                    "<" => j = skip_angles(toks, j),
                    "::" | "const" | "struct" | "unsigned" | "signed" => j += 1,
                    s if s.chars().next().is_some_and(is_ident_start) => j += 1,
                    _ => break,
                }
            }
            push(Kind::CxxNew, if text(j) == "[" { "new[]".into() } else { "new".into() }, None);
        }
        if CXX_MAKERS.contains(&t)
            && (text(i + 1) == "<" || text(i + 1) == "(")
            && prev == "::"
            && text(i.wrapping_sub(2)) == "std"
        {
            push(Kind::CxxNew, format!("std::{t}"), None);
        }
        if prev == "::" && text(i.wrapping_sub(2)) == "std" && i >= 2 {
            if CONTAINERS.contains(&t) && text(i + 1) == "<" {
                push(Kind::Container, format!("std::{t}"), None);
            }
            // `std::thread(f)`, `std::thread{f}`, `std::thread t(f)`: a thread starts. A member
            // `std::thread mThread;` or `std::thread::id` does not.
            if t == "thread" {
                let next = text(i + 1);
                let starts = next == "("
                    || next == "{"
                    || (next.chars().next().is_some_and(is_ident_start) && matches!(text(i + 2), "(" | "{"));
                if starts {
                    push(Kind::Thread, "std::thread".into(), None);
                }
            }
        }
    }
    found
}

/// Index after the group opened at `open` (`(`, `[` or `{`).
fn skip_group(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0i32;
    let mut j = open;
    while j < toks.len() {
        match toks[j].text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

fn skip_angles(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0i32;
    let mut j = open;
    while j < toks.len() {
        match toks[j].text.as_str() {
            "<" => depth += 1,
            ">" => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            ";" | "{" | "}" => return j,
            _ => {}
        }
        j += 1;
    }
    j
}

/// The text of argument `n` (0-based) of the call whose `(` is at `open`.
fn argument(toks: &[Tok], open: usize, n: usize) -> String {
    let mut depth = 0i32;
    let mut index = 0;
    let mut out: Vec<&str> = Vec::new();
    for t in &toks[open..] {
        match t.text.as_str() {
            "(" | "[" | "{" => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            "," if depth == 1 => {
                index += 1;
                continue;
            }
            _ => {}
        }
        if index == n && depth >= 1 {
            out.push(&t.text);
        }
    }
    out.join(" ").replace(" :: ", "::").replace("( ", "(").replace(" )", ")")
}

/// The size given to `pthread_attr_setstacksize` in the 200 tokens before a `pthread_create`.
fn stack_size_set_before(toks: &[Tok], at: usize) -> Option<String> {
    (at.saturating_sub(200)..at)
        .rev()
        .find(|&j| toks[j].text == "pthread_attr_setstacksize" && toks.get(j + 1).is_some_and(|t| t.text == "("))
        .map(|j| argument(toks, j + 1, 1))
}
