// uPlot (canvas, ~50 kB) for the live series; a description for screen readers, and the page
// offers a table of the same numbers.
import { useElementSize } from "@mantine/hooks";
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { formatTime } from "../lib/format";

export type Series = { label: string; color: string; values: number[]; scale: "left" };

export function LineChart({
  x,
  series,
  description,
  timeZone,
}: {
  x: number[];
  series: Series[];
  description: string;
  timeZone: string;
}) {
  const { ref, width } = useElementSize();
  const holder = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = series.map((s) => s.label + s.scale).join("|");

  useEffect(() => {
    if (!holder.current || width === 0) return;
    const opts: uPlot.Options = {
      width,
      height: 260,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), timeZone),
      scales: {
        x: { time: true },
        left: { auto: true, range: (_u, min, max) => [Math.max(0, Math.floor(min) - 1), Math.ceil(max) + 1] },
      },
      axes: [
        {
          stroke: "#343a40",
          grid: { stroke: "#e9ecef" },
          space: 90,
          values: (_u, splits) => splits.map((ts) => formatTime(ts * 1000, timeZone)),
        },
        { scale: "left", stroke: "#343a40", grid: { stroke: "#e9ecef" } },
      ],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          fill: `${s.color}1a`,
          width: 2,
          scale: s.scale,
          paths: uPlot.paths.stepped!({ align: 1 }), // a cumulative count moves in steps
          points: { show: true, size: 6 },
        })),
      ],
      legend: { show: false },
    };
    plot.current = new uPlot(opts, [x, ...series.map((s) => s.values)], holder.current);
    return () => {
      plot.current?.destroy();
      plot.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- rebuilt only when the shape changes
  }, [width, shape, timeZone]);

  useEffect(() => {
    plot.current?.setData([x, ...series.map((s) => s.values)]);
  }, [x, series]);

  return (
    <div ref={ref} style={{ width: "100%" }}>
      <div ref={holder} role="img" aria-label={description} />
    </div>
  );
}
