include!("stages/torch/build.rs");
