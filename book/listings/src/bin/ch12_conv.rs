//! Chapter 12: convolutions — a 3×3 filter slid over an image, by hand and by nabla; weight
//! sharing; translation; pooling.
//!
//! `cargo run --release -p nabla-book --bin ch12_conv`

use nabla::nn::{Conv2d, Init, Module};
use nabla::ops::Conv2dOptions;
use nabla::{Rng, Tensor};

fn main() -> nabla::Result<()> {
    // ANCHOR: by_hand
    // A 6×6 image (batch 1, 1 channel): dark left half, bright right half.
    let img: Vec<f32> = (0..36)
        .map(|i| if i % 6 >= 3 { 1.0 } else { 0.0 })
        .collect();
    let x = Tensor::from_vec(img.clone(), &[1, 1, 6, 6])?;
    // A 3×3 filter that responds to a left-to-right increase (a vertical edge).
    let w: Vec<f32> = vec![-1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0];
    let filter = Tensor::from_vec(w.clone(), &[1, 1, 3, 3])?;
    // By hand: each output pixel is the filter times the 3×3 patch under it, summed.
    let mut by_hand = vec![0.0f32; 16];
    for (i, out) in by_hand.iter_mut().enumerate() {
        let (r, c) = (i / 4, i % 4);
        for (t, wv) in w.iter().enumerate() {
            *out += wv * img[(r + t / 3) * 6 + c + t % 3];
        }
    }
    let y = x.conv2d(&filter, None, Conv2dOptions::default())?; // [1, 1, 4, 4]
    println!("conv2d output {:?}, row by row:", y.shape());
    for r in y.to_vec()?.chunks(4) {
        println!("  {r:?}");
    }
    println!("same as by hand: {}", y.to_vec()? == by_hand);
    // ANCHOR_END: by_hand
    // ANCHOR: sharing
    // Weight sharing: the same 3×3 filters everywhere. 32 filters on a 28×28 image...
    let mut rng = Rng::new(0);
    let same = Conv2dOptions {
        padding: (1, 1),
        ..Default::default()
    };
    let conv = Conv2d::<f32>::new(1, 32, (3, 3), same, true, Init::KaimingUniform, &mut rng)?;
    let conv_weights: usize = conv.parameters().iter().map(|p| p.numel()).sum();
    let dense_weights = 784 * 32 * 784 + 32 * 784; // a Linear(784 → 32·784) with its bias
    println!(
        "28×28 → 32 maps of 28×28: a convolution has {conv_weights} weights, a dense layer {dense_weights}"
    );
    // ... and translation: shift the image one pixel right, the output shifts with it.
    let shifted: Vec<f32> = (0..36)
        .map(|i| if i % 6 >= 4 { 1.0 } else { 0.0 })
        .collect();
    let ys = Tensor::from_vec(shifted, &[1, 1, 6, 6])?.conv2d(
        &filter,
        None,
        Conv2dOptions::default(),
    )?;
    println!(
        "edge response per column, original {:?}, shifted {:?}",
        &y.to_vec()?[..4],
        &ys.to_vec()?[..4]
    );
    // ANCHOR_END: sharing
    // ANCHOR: pool
    // Max pooling keeps the largest value of each 2×2 block: a smaller map, and a little
    // tolerance to where exactly a feature is.
    let p = y.max_pool2d((2, 2), (2, 2), (0, 0))?;
    println!("max_pool2d 2×2: {:?} {:?}", p.shape(), p.to_vec()?);
    // ANCHOR_END: pool
    Ok(())
}
