include!("stages/torch/build_support/rpath.rs");

fn main() {
    libtorch_rpath();
}
