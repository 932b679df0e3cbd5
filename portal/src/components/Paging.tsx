import { Group, Pagination, Text } from "@mantine/core";

export function Paging({
  total,
  limit,
  offset,
  onChange,
  label,
}: {
  total: number;
  limit: number;
  offset: number;
  onChange: (offset: number) => void;
  label: string;
}) {
  const pages = Math.max(1, Math.ceil(total / limit));
  const page = Math.floor(offset / limit) + 1;
  return (
    <Group justify="space-between" mt="md" wrap="wrap">
      <Text size="sm" aria-live="polite">
        {total === 0 ? "No results" : `${offset + 1}–${Math.min(offset + limit, total)} of ${total}`}
      </Text>
      {pages > 1 ? (
        <nav aria-label={label}>
          <Pagination
            total={pages}
            withEdges
            value={page}
            onChange={(p) => onChange((p - 1) * limit)}
            getItemProps={(p) => ({ "aria-label": `Page ${p}`, "aria-current": p === page ? "page" : undefined })}
            getControlProps={(control) => ({
              "aria-label": { first: "First page", last: "Last page", next: "Next page", previous: "Previous page" }[
                control
              ],
            })}
          />
        </nav>
      ) : null}
    </Group>
  );
}
