// A doctor's day or week: each day a list of its appointments, in the clinic's time zone.
import { Button, Card, Group, SegmentedControl, SimpleGrid, Stack, Text, Title } from "@mantine/core";
import { useQuery } from "@tanstack/react-query";
import { useNavigate, useSearch } from "@tanstack/react-router";
import { appointmentsListAppointments } from "../client/sdk.gen";
import type { AppointmentPublic } from "../client/types.gen";
import { DoctorPicker } from "../components/Pickers";
import { Empty, ErrorState, Loading, PageHeader, StatusBadge } from "../components/ui";
import { unwrap } from "../lib/api";
import { useOwnDoctorId } from "../lib/appointments";
import { endOf } from "../lib/appointments";
import { formatDay, formatTime, isoDateIn, startOfDay, startOfWeek, zonedIso } from "../lib/format";
import { useClinic, useDoctorName, useDoctors, useMe } from "../lib/hooks";
import { PatientName } from "../components/PatientName";
import { AnchorLink, ButtonLink } from "../components/links";

type Search = { doctorId?: string; view?: "day" | "week"; date?: string };

export function CalendarPage() {
  const me = useMe().data;
  const clinic = useClinic();
  const tz = clinic.timeZone;
  const doctors = useDoctors();
  const doctorName = useDoctorName();
  const ownDoctor = useOwnDoctorId();
  const navigate = useNavigate();
  const s = useSearch({ strict: false }) as Search;
  const view = s.view ?? "week";
  const doctorId = ownDoctor ?? s.doctorId ?? doctors.data?.items[0]?.id ?? "";
  const anchor = s.date ? new Date(zonedIso(s.date, "12:00", tz)) : new Date();
  const start = view === "week" ? startOfWeek(anchor, tz) : startOfDay(anchor, tz);
  const days = Array.from({ length: view === "week" ? 7 : 1 }, (_, i) => startOfDay(start, tz, i));
  const end = startOfDay(start, tz, days.length);
  const set = (next: Search) => navigate({ to: "/appointments/calendar", search: { ...s, ...next }, replace: true });
  const shift = (n: number) => set({ date: isoDateIn(startOfDay(start, tz, n * days.length), tz) });

  const list = useQuery({
    queryKey: ["appointments", "calendar", doctorId, start.toISOString(), end.toISOString()],
    queryFn: () =>
      unwrap(
        appointmentsListAppointments({
          query: { doctorId, from: start.toISOString(), to: end.toISOString(), limit: 100 },
        }),
      ),
    enabled: !!doctorId,
  });
  const byDay = (day: Date): AppointmentPublic[] =>
    (list.data?.items ?? []).filter((a) => isoDateIn(new Date(a.time), tz) === isoDateIn(day, tz));
  const range =
    days.length === 1 ? formatDay(days[0], tz) : `${formatDay(days[0], tz)} – ${formatDay(days[6], tz)}`;

  return (
    <>
      <PageHeader
        title={doctorId ? `Calendar of ${doctorName(doctorId)}` : "Calendar"}
        actions={
          <ButtonLink to="/appointments/new" search={doctorId ? { doctorId } : {}}>
            Book appointment
          </ButtonLink>
        }
      />
      <Group mb="md" align="flex-end" wrap="wrap">
        {me?.role !== "doctor" ? (
          <DoctorPicker value={doctorId} onChange={(id) => set({ doctorId: id })} />
        ) : null}
        <SegmentedControl
          aria-label="Calendar view"
          value={view}
          onChange={(v) => set({ view: v as "day" | "week" })}
          data={[
            { value: "day", label: "Day" },
            { value: "week", label: "Week" },
          ]}
        />
        <Group gap="xs">
          <Button variant="default" onClick={() => shift(-1)}>
            {view === "week" ? "Previous week" : "Previous day"}
          </Button>
          <Button variant="default" onClick={() => set({ date: undefined })}>
            Today
          </Button>
          <Button variant="default" onClick={() => shift(1)}>
            {view === "week" ? "Next week" : "Next day"}
          </Button>
        </Group>
      </Group>
      <Title order={2} size="h3" mb="sm" aria-live="polite">
        {range}
      </Title>
      {!doctorId ? (
        <Empty>{me?.role === "doctor" ? "Your account is not linked to a doctor yet." : "No doctors yet."}</Empty>
      ) : list.isPending ? (
        <Loading label="Loading the calendar…" />
      ) : list.isError ? (
        <ErrorState error={list.error} />
      ) : (
        <SimpleGrid cols={{ base: 1, sm: days.length === 1 ? 1 : 2, lg: days.length === 1 ? 1 : 7 }} spacing="xs">
          {days.map((day) => {
            const items = byDay(day);
            const isToday = isoDateIn(day, tz) === isoDateIn(new Date(), tz);
            return (
              <Card key={day.toISOString()} withBorder padding="xs" component="section" aria-label={formatDay(day, tz)} className={isToday ? "today" : undefined}>
                <Text fw={700} size="sm" mb="xs" component="h3">
                  {formatDay(day, tz)}
                </Text>
                {items.length === 0 ? (
                  <Text size="sm" c="dimmed">
                    Free
                  </Text>
                ) : (
                  <Stack gap={6} component="ul" className="plain-list">
                    {items.map((a) => (
                      <li key={a.id}>
                        <Card padding={6} radius="sm" className={`slot slot-${a.status.toLowerCase()}`}>
                          <AnchorLink to="/appointments/$appointmentId" params={{ appointmentId: a.id }} size="sm" fw={600}>
                            {formatTime(a.time, tz)}–{formatTime(endOf(a), tz)}
                          </AnchorLink>
                          <Text size="sm">
                            <PatientName id={a.patientId} />
                          </Text>
                          <StatusBadge status={a.status} />
                        </Card>
                      </li>
                    ))}
                  </Stack>
                )}
              </Card>
            );
          })}
        </SimpleGrid>
      )}
    </>
  );
}
