//! Compiles the protos under `proto/` (the workspace's `proto-build` crate says how).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    proto_build::compile("proto")
}
