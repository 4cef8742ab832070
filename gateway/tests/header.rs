//! Fails when `include/rgun.h` and `src/ffi.rs` drift apart: a C program built
//! from the header prints every size, alignment, field offset and constant,
//! and each is compared with what Rust computes for the same name. Function
//! pointer types are checked on each side against one signature list here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use rgun_gateway::ffi;

/// One fact about the ABI: the name both sides print it under, the C
/// expression that computes it, and Rust's value.
struct Fact {
    name: String,
    c_expr: String,
    rust: i64,
}

fn fact(name: impl Into<String>, c_expr: impl Into<String>, rust: usize) -> Fact {
    Fact {
        name: name.into(),
        c_expr: c_expr.into(),
        rust: rust as i64,
    }
}

fn size_of_field<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Size and alignment of `$rust` / `$c`, and offset and size of every field.
/// The destructuring pattern fails to compile when ffi.rs gains a field the
/// list lacks; a field the header gains shifts an offset or the size.
macro_rules! layout {
    ($facts:ident, $rust:path => $c:literal { $($field:ident),* $(,)? }) => {{
        let _every_field_listed = |v: &$rust| {
            let $rust { $($field: _),* } = v;
        };
        $facts.push(fact(concat!($c, " size"), concat!("sizeof(", $c, ")"), size_of::<$rust>()));
        $facts.push(fact(concat!($c, " align"), concat!("_Alignof(", $c, ")"), align_of::<$rust>()));
        $(
            $facts.push(fact(
                concat!($c, ".", stringify!($field), " offset"),
                concat!("offsetof(", $c, ", ", stringify!($field), ")"),
                offset_of!($rust, $field),
            ));
            $facts.push(fact(
                concat!($c, ".", stringify!($field), " size"),
                concat!("sizeof(((", $c, " *)0)->", stringify!($field), ")"),
                size_of_field(|v: &$rust| &v.$field),
            ));
        )*
    }};
}

/// An integer constant's value, width and signedness, so that `1u` against
/// `u32` and `(-1)` against `i32` are both checked.
trait Int: Copy + Into<i64> {
    const SIGNED: bool;
}
impl Int for u32 {
    const SIGNED: bool = false;
}
impl Int for i32 {
    const SIGNED: bool = true;
}

fn constant<T: Int>(facts: &mut Vec<Fact>, c: &str, value: T) {
    facts.push(Fact {
        name: c.to_string(),
        c_expr: format!("(long long)({c})"),
        rust: value.into(),
    });
    facts.push(fact(
        format!("{c} size"),
        format!("sizeof({c})"),
        size_of::<T>(),
    ));
    facts.push(Fact {
        name: format!("{c} signed"),
        c_expr: format!(
            "_Generic(({c}), signed char: 1, short: 1, int: 1, long: 1, long long: 1, default: 0)"
        ),
        rust: T::SIGNED.into(),
    });
}

fn facts() -> Vec<Fact> {
    let mut facts = Vec::new();
    layout!(facts, ffi::Str => "rgun_str" { ptr, len });
    layout!(facts, ffi::Header => "rgun_header" { name, value });
    layout!(facts, ffi::Request => "rgun_request" {
        method, raw_uri, path, query, script_name, protocol, scheme, server_name,
        remote_addr, content_type, headers, header_count, content_length,
        server_port, remote_port, body_chunked, client_addr,
    });
    layout!(facts, ffi::Server => "rgun_server" {
        abi_version, worker_id, app_arg, read_body, start_response, write_body,
        respond, log, send_file,
    });
    layout!(facts, ffi::App => "rgun_app" {
        magic, abi_version, flags, init, handle, shutdown, reserved,
    });
    constant(&mut facts, "RGUN_ABI_VERSION", ffi::ABI_VERSION);
    constant(&mut facts, "RGUN_MIN_ABI_VERSION", ffi::MIN_ABI_VERSION);
    constant(&mut facts, "RGUN_APP_MAGIC", ffi::APP_MAGIC);
    constant(&mut facts, "RGUN_OK", ffi::OK);
    constant(&mut facts, "RGUN_ERR", ffi::ERR);
    constant(&mut facts, "RGUN_ERR_LOAD", ffi::ERR_LOAD);
    constant(&mut facts, "RGUN_LOG_ERROR", ffi::LOG_ERROR);
    constant(&mut facts, "RGUN_LOG_WARNING", ffi::LOG_WARNING);
    constant(&mut facts, "RGUN_LOG_INFO", ffi::LOG_INFO);
    constant(&mut facts, "RGUN_LOG_DEBUG", ffi::LOG_DEBUG);
    constant(&mut facts, "RGUN_APP_THREAD_SAFE", ffi::APP_THREAD_SAFE);
    // The integer types the signatures below rely on.
    facts.push(fact("size_t size", "sizeof(size_t)", size_of::<usize>()));
    facts.push(fact("ssize_t size", "sizeof(ssize_t)", size_of::<isize>()));
    facts.push(fact("RGUN_STR len", "RGUN_STR(\"abc\").len", 3));
    facts
}

/// Every function pointer field's type in C, checked by the C compiler.
/// `rust_signatures` below states the same list for ffi.rs.
const C_SIGNATURES: &[(&str, &str)] = &[
    (
        "rgun_server, read_body",
        "ssize_t (*)(rgun_call *, uint8_t *, size_t)",
    ),
    (
        "rgun_server, start_response",
        "int32_t (*)(rgun_call *, uint16_t, rgun_str, const rgun_header *, size_t)",
    ),
    (
        "rgun_server, write_body",
        "int32_t (*)(rgun_call *, const uint8_t *, size_t)",
    ),
    (
        "rgun_server, respond",
        "int32_t (*)(rgun_call *, uint16_t, rgun_str, const rgun_header *, size_t, \
         const uint8_t *, size_t)",
    ),
    ("rgun_server, log", "void (*)(int32_t, rgun_str)"),
    (
        "rgun_server, send_file",
        "int32_t (*)(rgun_call *, int32_t, int64_t, int64_t)",
    ),
    ("rgun_app, init", "int32_t (*)(const rgun_server *)"),
    (
        "rgun_app, handle",
        "int32_t (*)(const rgun_server *, rgun_call *, const rgun_request *)",
    ),
    ("rgun_app, shutdown", "void (*)(const rgun_server *)"),
    ("rgun_request, headers", "const rgun_header *"),
    ("rgun_str, ptr", "const uint8_t *"),
    ("rgun_app, reserved", "const void *"),
];

/// The same list as [`C_SIGNATURES`], checked by the Rust compiler: each
/// binding fails to compile when ffi.rs changes the field's type.
fn rust_signatures(server: &ffi::Server, app: &ffi::App, request: &ffi::Request, s: ffi::Str) {
    let _: unsafe extern "C" fn(*mut ffi::Call, *mut u8, usize) -> isize = server.read_body;
    let _: unsafe extern "C" fn(*mut ffi::Call, u16, ffi::Str, *const ffi::Header, usize) -> i32 =
        server.start_response;
    let _: unsafe extern "C" fn(*mut ffi::Call, *const u8, usize) -> i32 = server.write_body;
    let _: unsafe extern "C" fn(
        *mut ffi::Call,
        u16,
        ffi::Str,
        *const ffi::Header,
        usize,
        *const u8,
        usize,
    ) -> i32 = server.respond;
    let _: unsafe extern "C" fn(i32, ffi::Str) = server.log;
    let _: unsafe extern "C" fn(*mut ffi::Call, i32, i64, i64) -> i32 = server.send_file;
    let _: Option<unsafe extern "C" fn(*const ffi::Server) -> i32> = app.init;
    let _: Option<
        unsafe extern "C" fn(*const ffi::Server, *mut ffi::Call, *const ffi::Request) -> i32,
    > = app.handle;
    let _: Option<unsafe extern "C" fn(*const ffi::Server)> = app.shutdown;
    let _: *const ffi::Header = request.headers;
    let _: *const u8 = s.ptr;
    let _: *const core::ffi::c_void = app.reserved;
}

fn c_program(facts: &[Fact]) -> String {
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"rgun.h\"\n\n\
         #define SAME_TYPE(type, field, expected) \\\n    \
         _Static_assert(__builtin_types_compatible_p(\\\n        \
         __typeof__(((type *)0)->field), expected), #type \".\" #field)\n\n",
    );
    for (field, expected) in C_SIGNATURES {
        writeln!(c, "SAME_TYPE({field}, {expected});").unwrap();
    }
    c.push_str("\nint main(void)\n{\n");
    for f in facts {
        writeln!(
            c,
            "    printf(\"%s %lld\\n\", \"{}\", (long long)({}));",
            f.name, f.c_expr
        )
        .unwrap();
    }
    c.push_str("    return 0;\n}\n");
    c
}

/// A scratch directory of its own, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("rgun-gateway-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

/// Runs `cc` with warnings as errors; panics with its output when it fails.
fn cc(args: &[&std::ffi::OsStr]) {
    let output = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(include_dir())
        .args(args)
        .output()
        .expect("run cc (a C compiler is needed to check rgun.h)");
    assert!(
        output.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn header_matches_ffi_rs() {
    let _ = rust_signatures;
    let facts = facts();
    let scratch = Scratch::new("header");
    let source = scratch.0.join("layout.c");
    let program = scratch.0.join("layout");
    std::fs::write(&source, c_program(&facts)).unwrap();
    cc(&[source.as_os_str(), "-o".as_ref(), program.as_os_str()]);

    let output = Command::new(&program).output().expect("run the C program");
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let c: BTreeMap<&str, i64> = stdout
        .lines()
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            (name, value.parse().unwrap())
        })
        .collect();

    let mismatches: Vec<String> = facts
        .iter()
        .filter(|f| c.get(f.name.as_str()) != Some(&f.rust))
        .map(|f| {
            let c = c
                .get(f.name.as_str())
                .map_or("nothing".into(), i64::to_string);
            format!("{}: rgun.h says {c}, ffi.rs says {}", f.name, f.rust)
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "include/rgun.h and src/ffi.rs disagree:\n  {}",
        mismatches.join("\n  ")
    );
    assert_eq!(c.len(), facts.len(), "a fact was printed twice");
}

/// The C example is the header's showcase: it must keep building, warning
/// free, from the header alone.
#[test]
fn c_example_builds_against_the_header() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/c/hello.c");
    let scratch = Scratch::new("c-example");
    let library = scratch.0.join("libhello_c.so");
    cc(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-O2".as_ref(),
        example.as_os_str(),
        "-o".as_ref(),
        library.as_os_str(),
    ]);
}
