// Routes: the public sign-in and register pages, and the signed-in app whose pages each role may
// open only if its navigation lists them (the API checks every request again).
import { Text } from "@mantine/core";
import { useQuery } from "@tanstack/react-query";
import {
  Outlet,
  createRootRouteWithContext,
  createRoute,
  createRouter,
  lazyRouteComponent,
  redirect,
  useRouterState,
  type RouteComponent,
} from "@tanstack/react-router";
import type { QueryClient } from "@tanstack/react-query";
import { Layout } from "./components/Layout";
import { ErrorState, Loading, PageHeader } from "./components/ui";
import { meQuery } from "./lib/hooks";
import { allowed } from "./lib/nav";
import { currentToken, expireSession, readSession } from "./lib/session";
import { HomePage } from "./pages/Home";
import { RegisterPage, SignInPage } from "./pages/SignIn";
import { AnchorLink } from "./components/links";

type Search = Record<string, string | number | undefined>;
/** Keep only string and number values of the query string (nothing else reaches a page). */
const search = (raw: Record<string, unknown>): Search => {
  const out: Search = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k === "offset") {
      const n = Number(v);
      if (Number.isInteger(n) && n >= 0) out.offset = n;
    } else if (typeof v === "string" || typeof v === "number") out[k] = String(v);
  }
  return out;
};

const rootRoute = createRootRouteWithContext<{ queryClient: QueryClient }>()({
  component: Outlet,
  notFoundComponent: NotFound,
});

const signInRoute = createRoute({
  getParentRoute: () => rootRoute,
  path: "/sign-in",
  validateSearch: search,
  beforeLoad: () => {
    if (currentToken()) throw redirect({ to: "/" });
  },
  component: SignInPage,
});

const registerRoute = createRoute({
  getParentRoute: () => rootRoute,
  path: "/register",
  beforeLoad: () => {
    if (currentToken()) throw redirect({ to: "/" });
  },
  component: RegisterPage,
});

const appRoute = createRoute({
  getParentRoute: () => rootRoute,
  id: "app",
  beforeLoad: ({ location }) => {
    const stored = readSession();
    if (stored && !currentToken()) expireSession(); // expired while the tab was closed
    if (!currentToken()) {
      throw redirect({ to: "/sign-in", search: { redirect: location.href } });
    }
  },
  component: AppFrame,
});

function AppFrame() {
  const me = useQuery(meQuery);
  const path = useRouterState({ select: (s) => s.location.pathname });
  if (me.isPending) return <Loading label="Signing in…" />;
  if (me.isError) {
    return (
      <main id="main" style={{ padding: 24 }}>
        <ErrorState error={me.error} title="Could not load your account" />
      </main>
    );
  }
  return (
    <Layout me={me.data}>
      {allowed(path, me.data.role) ? (
        <Outlet />
      ) : (
        <>
          <PageHeader title="Not available" />
          <Text>
            This page is not part of your role's work.{" "}
            <AnchorLink to="/">
              Go home
            </AnchorLink>
            .
          </Text>
        </>
      )}
    </Layout>
  );
}

function NotFound() {
  return (
    <main id="main" style={{ padding: 24 }}>
      <PageHeader title="Page not found" />
      <Text>
        There is nothing at this address.{" "}
        <AnchorLink to="/">
          Go home
        </AnchorLink>
        .
      </Text>
    </main>
  );
}

const page = <P extends string>(path: P, component: RouteComponent) =>
  createRoute({ getParentRoute: () => appRoute, path, validateSearch: search, component });

// Each section is its own chunk, loaded when first opened (or when a link to it is hovered).
const lazy = {
  patients: (name: string) => lazyRouteComponent(() => import("./pages/Patients"), name as "PatientsPage"),
  appointments: (name: string) => lazyRouteComponent(() => import("./pages/Appointments"), name as "BookPage"),
  invoices: (name: string) => lazyRouteComponent(() => import("./pages/Invoices"), name as "InvoicesPage"),
};

const routeTree = rootRoute.addChildren([
  signInRoute,
  registerRoute,
  appRoute.addChildren([
    page("/", HomePage),
    page("/patients", lazy.patients("PatientsPage")),
    page("/patients/new", lazy.patients("NewPatientPage")),
    page("/patients/$patientId", lazy.patients("PatientPage")),
    page("/patients/$patientId/edit", lazy.patients("EditPatientPage")),
    page("/appointments", lazy.appointments("AppointmentsPage")),
    page("/appointments/new", lazy.appointments("BookPage")),
    page("/appointments/calendar", lazyRouteComponent(() => import("./pages/Calendar"), "CalendarPage")),
    page("/appointments/$appointmentId", lazy.appointments("AppointmentPage")),
    page("/invoices", lazy.invoices("InvoicesPage")),
    page("/invoices/$invoiceId", lazy.invoices("InvoicePage")),
    createRoute({
      getParentRoute: () => appRoute,
      path: "/analytics",
      component: lazyRouteComponent(() => import("./pages/Analytics")),
    }),
    createRoute({
      getParentRoute: () => appRoute,
      path: "/admin/doctors",
      component: lazyRouteComponent(() => import("./pages/Admin"), "DoctorsPage"),
    }),
    createRoute({
      getParentRoute: () => appRoute,
      path: "/admin/users",
      validateSearch: search,
      component: lazyRouteComponent(() => import("./pages/Admin"), "UsersPage"),
    }),
    createRoute({
      getParentRoute: () => appRoute,
      path: "/admin/audit",
      validateSearch: search,
      component: lazyRouteComponent(() => import("./pages/Admin"), "AuditPage"),
    }),
  ]),
]);

export function makeRouter(queryClient: QueryClient) {
  return createRouter({
    routeTree,
    context: { queryClient },
    defaultPreload: "intent",
    scrollRestoration: true,
  });
}

declare module "@tanstack/react-router" {
  interface Register {
    router: ReturnType<typeof makeRouter>;
  }
}
