import { Badge, Card, Group, SegmentedControl, SimpleGrid, Table, Text, Title } from "@mantine/core";
import { useMemo, useState } from "react";
import { LineChart } from "../components/LineChart";
import { Empty, PageHeader } from "../components/ui";
import { useAnalyticsFeed } from "../lib/analytics";
import { formatNumber, formatTimeWithSeconds } from "../lib/format";
import { useClinic } from "../lib/hooks";

export default function AnalyticsPage() {
  const clinic = useClinic();
  const feed = useAnalyticsFeed(clinic.analyticsWsUrl);
  const [view, setView] = useState<"chart" | "table">("chart");
  const latest = feed.latest;
  const tz = clinic.timeZone;

  const x = useMemo(() => feed.history.map((r) => r.timestamp / 1000), [feed.history]);
  const series = useMemo(
    () => [
      { label: "Appointments created", color: "#1864ab", values: feed.history.map((r) => r.totalEventsCreated), scale: "left" as const },
    ],
    [feed.history],
  );

  const status =
    feed.status === "live" ? (
      <Badge color="green" variant="light">Live</Badge>
    ) : feed.status === "reconnecting" ? (
      <Badge color="orange" variant="light">
        {feed.retryInSeconds ? `Reconnecting in ${feed.retryInSeconds} s` : "Reconnecting…"}
      </Badge>
    ) : (
      <Badge color="gray" variant="light">Connecting…</Badge>
    );

  return (
    <>
      <PageHeader title="Analytics" actions={<span role="status" aria-live="polite" data-testid="feed-status">{status}</span>} />
      <SimpleGrid cols={{ base: 1, sm: 3 }} mb="lg">
        <Tile label="Appointments created" testId="total-created" value={latest ? formatNumber(latest.totalEventsCreated) : "—"} />
        <Tile label="Average per hour" testId="avg-per-hour" value={latest ? formatNumber(latest.avgAppointmentsPerHour, 2) : "—"} note="over the last 24 hours" />
        <Tile
          label="Last updated"
          testId="last-updated"
          value={feed.receivedAt ? formatTimeWithSeconds(feed.receivedAt, tz) : "—"}
          note={latest ? `result of ${formatTimeWithSeconds(latest.timestamp, tz)}` : "waiting for the first result"}
        />
      </SimpleGrid>
      <Card withBorder>
        <Group justify="space-between" mb="sm" wrap="wrap">
          <Title order={2} size="h3">
            Appointments created since this page opened
          </Title>
          <SegmentedControl
            aria-label="Show as"
            value={view}
            onChange={(v) => setView(v as "chart" | "table")}
            data={[
              { value: "chart", label: "Chart" },
              { value: "table", label: "Table" },
            ]}
          />
        </Group>
        {feed.history.length === 0 ? (
          <Empty>No results yet. They arrive as appointments are booked.</Empty>
        ) : view === "chart" ? (
          <LineChart
            x={x}
            series={series}
            timeZone={tz}
            description={`Line chart of ${feed.history.length} results; latest total ${latest?.totalEventsCreated ?? 0}, average ${formatNumber(latest?.avgAppointmentsPerHour ?? 0, 2)} per hour. The table view lists the same numbers.`}
          />
        ) : (
          <Table.ScrollContainer minWidth={420} mah={360}>
            <Table striped stickyHeader>
              <caption className="visually-hidden">Analytics results, newest first</caption>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">Time</Table.Th>
                  <Table.Th scope="col" ta="right">Appointments created</Table.Th>
                  <Table.Th scope="col" ta="right">Average per hour</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {[...feed.history].reverse().map((r, i) => (
                  <Table.Tr key={`${r.timestamp}-${i}`}>
                    <Table.Td>{formatTimeWithSeconds(r.timestamp, tz)}</Table.Td>
                    <Table.Td ta="right">{formatNumber(r.totalEventsCreated)}</Table.Td>
                    <Table.Td ta="right">{formatNumber(r.avgAppointmentsPerHour, 2)}</Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
        )}
      </Card>
      <Text size="sm" mt="sm" c="dimmed">
        Results come from the analytics job as they are computed; times in {tz}.
      </Text>
    </>
  );
}

function Tile({ label, value, note, testId }: { label: string; value: string; note?: string; testId: string }) {
  const id = `tile-${testId}`;
  return (
    <Card withBorder component="section" aria-labelledby={id}>
      <Text size="sm" fw={600} id={id} component="h2">
        {label}
      </Text>
      <Text fz={32} fw={700} data-testid={testId}>
        {value}
      </Text>
      {note ? (
        <Text size="xs" c="dimmed">
          {note}
        </Text>
      ) : null}
    </Card>
  );
}
