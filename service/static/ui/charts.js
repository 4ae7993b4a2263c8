// Canvas drawings: the notes' histogram with its cumulative distribution, the live
// training curves, and the colours of the classes on the decision plane.

import { fitCanvas, palette } from "./dom.js";

const CHANNEL_COLOURS = ["#e0413a", "#3aa655", "#3b6fe0", "#999999"];
const PAD = { left: 44, right: 40, top: 10, bottom: 30 };

/**
 * The notes' plot_img_and_hist, lower half: the histogram as a step line (one per
 * channel for colour images) and the cumulative distribution on a second axis, 0 to 1.
 * `histogram` and `cdf` are the `values` of the histogram and cumulative_distribution ops.
 */
export function drawHistogram(canvas, histogram, cdf) {
  const { context: ctx, width, height } = fitCanvas(canvas, 150);
  const colours = palette();
  ctx.clearRect(0, 0, width, height);
  const centers = histogram.bin_centers;
  const series = Array.isArray(histogram.counts[0]) ? histogram.counts : [histogram.counts];
  const xMin = centers[0];
  const xMax = centers.at(-1) === xMin ? xMin + 1 : centers.at(-1);
  const yMax = Math.max(1, ...series.map((counts) => Math.max(...counts)));
  const plot = frame(ctx, width, height, colours);
  const x = (value) => plot.left + ((value - xMin) / (xMax - xMin)) * plot.width;
  const yCount = (value) => plot.bottom - (value / yMax) * plot.height;
  const yFraction = (value) => plot.bottom - value * plot.height;

  series.forEach((counts, channel) => {
    ctx.strokeStyle = series.length === 1 ? colours.fg : CHANNEL_COLOURS[channel];
    ctx.lineWidth = 1;
    ctx.beginPath();
    const half = centers.length > 1 ? (centers[1] - centers[0]) / 2 : 0.5;
    counts.forEach((count, i) => {
      const left = x(Math.max(xMin, centers[i] - half));
      const right = x(Math.min(xMax, centers[i] + half));
      if (i === 0) ctx.moveTo(left, yCount(count));
      else ctx.lineTo(left, yCount(count));
      ctx.lineTo(right, yCount(count));
    });
    ctx.stroke();
  });

  ctx.strokeStyle = colours.cdf;
  ctx.lineWidth = 1.5;
  ctx.setLineDash(series.length === 1 ? [] : [5, 3]);
  ctx.beginPath();
  cdf.bin_centers.forEach((center, i) => {
    const px = x(center);
    const py = yFraction(cdf.cdf[i]);
    if (i === 0) ctx.moveTo(px, py);
    else ctx.lineTo(px, py);
  });
  ctx.stroke();
  ctx.setLineDash([]);

  ctx.fillStyle = colours.muted;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "left";
  ctx.fillText(formatTick(xMin), plot.left, plot.bottom + 14);
  ctx.textAlign = "right";
  ctx.fillText(formatTick(xMax), plot.right, plot.bottom + 14);
  ctx.textAlign = "center";
  ctx.fillText("pixel intensity", plot.left + plot.width / 2, plot.bottom + 14);
  ctx.textAlign = "right";
  ctx.fillText(compact(yMax), plot.left - 4, plot.top + 8);
  ctx.fillText("0", plot.left - 4, plot.bottom);
  ctx.textAlign = "left";
  ctx.fillStyle = colours.cdf;
  ctx.fillText("1", plot.right + 4, plot.top + 8);
  ctx.fillText("cdf", plot.right + 4, plot.top + plot.height / 2);
  ctx.fillText("0", plot.right + 4, plot.bottom);
}

/**
 * Loss (left axis, from 0) and accuracy (right axis, 0 to 1) against the epoch.
 * `points` are the progress reports: {epoch, loss, accuracy}.
 */
export function drawCurves(canvas, points, { epochs } = {}) {
  const { context: ctx, width, height } = fitCanvas(canvas, 220);
  const colours = palette();
  ctx.clearRect(0, 0, width, height);
  const plot = frame(ctx, width, height, colours);
  ctx.font = "11px system-ui, sans-serif";
  if (!points.length) {
    ctx.fillStyle = colours.muted;
    ctx.textAlign = "center";
    ctx.fillText("loss and accuracy appear here as the training reports", width / 2, height / 2);
    return;
  }
  const xMax = Math.max(epochs ?? 0, points.at(-1).epoch + 1, 1);
  const lossMax = Math.max(...points.map((p) => p.loss).filter(Number.isFinite), 1e-9);
  const x = (epoch) => plot.left + (epoch / xMax) * plot.width;
  const line = (values, y, colour) => {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.75;
    ctx.beginPath();
    values.forEach(([epoch, value], i) => {
      if (i === 0) ctx.moveTo(x(epoch), y(value));
      else ctx.lineTo(x(epoch), y(value));
    });
    ctx.stroke();
    for (const [epoch, value] of values.slice(-1)) {
      ctx.fillStyle = colour;
      ctx.beginPath();
      ctx.arc(x(epoch), y(value), 2.5, 0, 2 * Math.PI);
      ctx.fill();
    }
  };
  line(
    points.map((p) => [p.epoch, p.loss]),
    (value) => plot.bottom - (value / lossMax) * plot.height,
    colours.fg,
  );
  const accuracy = points.filter((p) => p.accuracy !== null && p.accuracy !== undefined);
  if (accuracy.length) {
    line(
      accuracy.map((p) => [p.epoch, p.accuracy]),
      (value) => plot.bottom - value * plot.height,
      colours.accent,
    );
  }
  ctx.fillStyle = colours.muted;
  ctx.textAlign = "left";
  ctx.fillText("0", plot.left, plot.bottom + 14);
  ctx.textAlign = "right";
  ctx.fillText(`${xMax} epochs`, plot.right, plot.bottom + 14);
  ctx.fillStyle = colours.fg;
  ctx.fillText(compact(lossMax), plot.left - 4, plot.top + 8);
  ctx.fillText("loss", plot.left - 4, plot.top + plot.height / 2);
  ctx.fillText("0", plot.left - 4, plot.bottom);
  if (accuracy.length) {
    ctx.fillStyle = colours.accent;
    ctx.textAlign = "left";
    ctx.fillText("1", plot.right + 4, plot.top + 8);
    ctx.fillText("acc", plot.right + 4, plot.top + plot.height / 2);
    ctx.fillText("0", plot.right + 4, plot.bottom);
  }
}

/** Colour of class `index` of `count`, as [r, g, b] in 0..255: evenly spaced hues. */
export function classColour(index, count) {
  const hue = (index / Math.max(count, 1)) * 360 + 210;
  return hslToRgb(hue % 360, 0.65, 0.5);
}

function frame(ctx, width, height, colours) {
  const plot = {
    left: PAD.left,
    right: width - PAD.right,
    top: PAD.top,
    bottom: height - PAD.bottom,
  };
  plot.width = Math.max(1, plot.right - plot.left);
  plot.height = Math.max(1, plot.bottom - plot.top);
  ctx.strokeStyle = colours.grid;
  ctx.lineWidth = 1;
  ctx.strokeRect(plot.left + 0.5, plot.top + 0.5, plot.width, plot.height);
  return plot;
}

function formatTick(value) {
  return Number.isInteger(value) ? String(value) : value.toPrecision(3);
}

function compact(value) {
  if (value >= 1e4) return value.toExponential(1);
  return Number.isInteger(value) ? String(value) : value.toPrecision(3);
}

function hslToRgb(hue, saturation, lightness) {
  const a = saturation * Math.min(lightness, 1 - lightness);
  const f = (n) => {
    const k = (n + hue / 30) % 12;
    return lightness - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
  };
  return [f(0), f(8), f(4)].map((v) => Math.round(v * 255));
}
