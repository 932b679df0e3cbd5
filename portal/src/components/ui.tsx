// Small shared pieces: page header (focused on navigation), loading/empty/error states, status
// badges, and the status message after actions.
import { Alert, Badge, Center, Group, Loader, Text, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { useEffect, useRef, type ReactNode } from "react";
import { ApiError, errorMessage } from "../lib/api";

let navigated = false;

export function PageHeader({ title, actions }: { title: string; actions?: ReactNode }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · Clinic portal`;
    // After a navigation inside the app, a screen reader hears the new page's name and keyboard
    // focus starts at the page, not at the old link. A fresh load leaves focus at the top of the
    // document, where the first Tab reaches "Skip to main content".
    if (navigated) ref.current?.focus({ preventScroll: true });
    navigated = true;
  }, [title]);
  return (
    <Group justify="space-between" align="center" mb="md" wrap="wrap">
      <Title order={1} ref={ref} tabIndex={-1} className="page-title">
        {title}
      </Title>
      {actions ? <Group gap="sm">{actions}</Group> : null}
    </Group>
  );
}

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <Center py="xl" role="status" aria-live="polite">
      <Group gap="sm">
        <Loader size="sm" aria-hidden />
        <Text>{label}</Text>
      </Group>
    </Center>
  );
}

export function ErrorState({ error, title = "Could not load this" }: { error: unknown; title?: string }) {
  return (
    <Alert color="red" title={title} role="alert" variant="light">
      {errorMessage(error)}
    </Alert>
  );
}

/** A record that failed to load: "not found" for a 404 (missing and not-yours look the same). */
export function MissingRecord({ what, error }: { what: string; error: unknown }) {
  const missing = error instanceof ApiError && error.status === 404;
  return (
    <>
      <PageHeader title={missing ? `${what} not found` : `Could not load this ${what.toLowerCase()}`} />
      {missing ? (
        <Text>There is no {what.toLowerCase()} here that you may see.</Text>
      ) : (
        <ErrorState error={error} />
      )}
    </>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return (
    <Text py="lg" ta="center" c="dimmed" role="status">
      {children}
    </Text>
  );
}

const STATUS_COLOR: Record<string, string> = {
  BOOKED: "blue",
  COMPLETED: "green",
  CANCELLED: "gray",
  NO_SHOW: "orange",
  PENDING: "gray",
  ISSUED: "blue",
  PAID: "green",
  VOID: "gray",
  OVERDUE: "red",
  NEEDS_ATTENTION: "orange",
};

const STATUS_LABEL: Record<string, string> = { NO_SHOW: "NO-SHOW", NEEDS_ATTENTION: "NEEDS ATTENTION" };

export function StatusBadge({ status }: { status: string }) {
  return (
    <Badge color={STATUS_COLOR[status] ?? "gray"} variant="light" className="status-badge">
      {STATUS_LABEL[status] ?? status}
    </Badge>
  );
}

const CLOSE = { "aria-label": "Dismiss message" };

export function notifyDone(message: string): void {
  notifications.show({ color: "green", title: "Done", message, withBorder: true, closeButtonProps: CLOSE });
}

export function notifyFailed(error: unknown, title = "That did not work"): void {
  notifications.show({
    color: "red",
    title,
    message: errorMessage(error),
    withBorder: true,
    autoClose: 8000,
    closeButtonProps: CLOSE,
  });
}
