//! What the report's and the soak's SVG charts share: a white canvas, the
//! chart frame (caption, margin, axis label areas), and lines listed in a
//! bordered legend.

use std::path::Path;

use plotters::coord::ranged1d::AsRangedCoord;
use plotters::coord::Shift;
use plotters::prelude::*;

/// What drawing on an SVG canvas can fail with.
pub type DrawResult<T> = Result<T, DrawingAreaErrorKind<std::io::Error>>;

/// A chart drawn on an SVG canvas, over an `X` and a `Y` axis.
pub type Chart<'a, X, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>;

/// A white SVG canvas of `size` pixels, written to `path` on `present()`.
pub fn canvas(path: &Path, size: (u32, u32)) -> DrawResult<DrawingArea<SVGBackend<'_>, Shift>> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// A chart on `area` over `x` and `y`, under `caption`, with a 10 px margin
/// and `y_label_area` px for the y axis's labels. The caller draws its mesh.
pub fn frame<'a, X: AsRangedCoord, Y: AsRangedCoord>(
    area: &DrawingArea<SVGBackend<'a>, Shift>,
    caption: &str,
    y_label_area: u32,
    x: X,
    y: Y,
) -> DrawResult<Chart<'a, X::CoordDescType, Y::CoordDescType>> {
    ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(y_label_area)
        .build_cartesian_2d(x, y)
}

/// An axis a line can be drawn over: plotters keeps clones of its values.
pub trait LineAxis: Ranged<ValueType: Clone + 'static> {}

impl<A: Ranged<ValueType: Clone + 'static>> LineAxis for A {}

/// Draws `points` as a line in `color`, listed in the legend as `label`.
pub fn labelled_line<X: LineAxis, Y: LineAxis>(
    chart: &mut Chart<'_, X, Y>,
    points: impl IntoIterator<Item = (X::ValueType, Y::ValueType)>,
    color: RGBAColor,
    label: impl Into<String>,
) -> DrawResult<()> {
    chart
        .draw_series(LineSeries::new(points, color))?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], color));
    Ok(())
}

/// Draws the legend of the labelled lines, in a black border.
pub fn legend<X: Ranged, Y: Ranged>(chart: &mut Chart<'_, X, Y>) -> DrawResult<()> {
    chart.configure_series_labels().border_style(BLACK).draw()
}
