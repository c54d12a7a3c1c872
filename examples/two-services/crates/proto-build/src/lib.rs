//! The build script of every service's proto crate, once per workspace: [`compile`] compiles
//! every `.proto` under a directory with protox (pure Rust: no system `protoc`), generates the
//! tonic client and server, keeps the descriptor set for gRPC reflection, and lists the methods
//! the protos declare safe to retry (`option idempotency_level`). A proto crate's `build.rs` is
//! one call: `proto_build::compile("proto")`.

use std::path::{Path, PathBuf};

use protox::prost::Message as _;

/// Compiles the protos under `dir` (relative to the crate being built; also the include path)
/// into `OUT_DIR`: the tonic code, `descriptor.bin` and `idempotent.rs` (`IDEMPOTENT_METHODS`).
/// Cargo builds again when anything under `dir` changes.
pub fn compile(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    collect_protos(Path::new(dir), &mut files)?;
    files.sort();
    let descriptors = protox::compile(&files, [dir])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptor.bin"), descriptors.encode_to_vec())?;
    std::fs::write(
        out_dir.join("idempotent.rs"),
        idempotent_methods(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed={dir}");
    Ok(())
}

/// `IDEMPOTENT_METHODS`: `package.Service/Method` of every method whose options say
/// `idempotency_level = IDEMPOTENT` or `NO_SIDE_EFFECTS` (values 2 and 1 of
/// `google.protobuf.MethodOptions.IdempotencyLevel`).
fn idempotent_methods(
    descriptors: &protox::prost_reflect::prost_types::FileDescriptorSet,
) -> String {
    let mut names = Vec::new();
    for file in &descriptors.file {
        for service in &file.service {
            for method in &service.method {
                let level = method
                    .options
                    .as_ref()
                    .map_or(0, |options| options.idempotency_level.unwrap_or(0));
                if level == 1 || level == 2 {
                    let service_name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    names.push(format!("{service_name}/{}", method.name()));
                }
            }
        }
    }
    names.sort();
    let mut code = String::from(
        "/// `package.Service/Method` of the methods the protos mark `idempotency_level = \
         IDEMPOTENT`\n/// or `NO_SIDE_EFFECTS`: the only ones the client retries.\n\
         pub const IDEMPOTENT_METHODS: &[&str] = &[\n",
    );
    for name in names {
        code.push_str(&format!("    {name:?},\n"));
    }
    code.push_str("];\n");
    code
}

fn collect_protos(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
