import {
  createTheme,
  defaultVariantColorsResolver,
  parseThemeColor,
  type CSSVariablesResolver,
  type VariantColorsResolver,
} from "@mantine/core";

// Light variants (badges, alerts, light buttons) print their text in shade 6, about 2.4:1 for
// green or orange on their tint; a darkened shade 9 reads above 4.5:1 on every palette (WCAG AA).
const variantColorResolver: VariantColorsResolver = (input) => {
  const colors = defaultVariantColorsResolver(input);
  if (input.variant === "light" || input.variant === "outline" || input.variant === "subtle") {
    const parsed = parseThemeColor({ color: input.color || input.theme.primaryColor, theme: input.theme });
    if (parsed.isThemeColor && parsed.color !== "gray" && parsed.color !== "dark") {
      return { ...colors, color: `color-mix(in srgb, var(--mantine-color-${parsed.color}-9) 75%, black)` };
    }
  }
  return colors;
};

// Shade 8 of blue keeps links and filled buttons above 4.5:1 contrast on white.
export const theme = createTheme({
  primaryColor: "blue",
  primaryShade: 8,
  variantColorResolver,
  fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', 'DejaVu Sans', sans-serif",
  defaultRadius: "md",
  headings: { fontWeight: "700" },
});

// Mantine's dimmed text and placeholders are gray 6 (3.3:1 on white); gray 7 reads at about 8:1.
export const cssVariables: CSSVariablesResolver = () => ({
  variables: {},
  light: {
    "--mantine-color-dimmed": "var(--mantine-color-gray-7)",
    "--mantine-color-placeholder": "var(--mantine-color-gray-7)",
  },
  dark: {},
});
