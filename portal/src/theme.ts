import { createTheme } from "@mantine/core";

// Shade 8 of blue keeps text and filled buttons above 4.5:1 contrast on white (WCAG 2.1 AA).
export const theme = createTheme({
  primaryColor: "blue",
  primaryShade: 8,
  fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', 'DejaVu Sans', sans-serif",
  defaultRadius: "md",
  headings: { fontWeight: "700" },
});
